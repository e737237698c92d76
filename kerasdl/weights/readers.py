"""Read checkpoint files into ``{name: numpy array}``: safetensors, PyTorch ``.pth``, Keras.

* ``.safetensors``: the ``safetensors`` package, NumPy only (no torch); bfloat16 tensors are
  widened to float32 from the raw bytes (NumPy has no bfloat16).
* ``.pth`` / ``.pt`` / ``.bin``: ``torch.load(weights_only=True)`` (no code from the file runs),
  when torch is installed; a ``state_dict`` or a dict wrapping one under ``state_dict``,
  ``model``, ``state_dict_ema`` or ``model_ema`` (training checkpoints); DataParallel's
  ``module.`` prefix is removed (timm's ``clean_state_dict``).
* ``.keras`` / ``.weights.h5``: Keras files, read by Keras (see :mod:`kerasdl.weights.loading`).

A ``config.json`` beside the checkpoint in timm's Hugging Face layout (``architecture``,
``pretrained_cfg``) is read as the checkpoint's preprocessing.

References:
    timm ``models/_helpers.py`` (``load_state_dict``, ``clean_state_dict``); keras-hub
    ``src/utils/timm/preset_loader.py`` (a timm checkpoint's ``config.json``: ``architecture``,
    ``pretrained_cfg`` mean / std / interpolation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasdl.errors import UserError

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
KERAS_SUFFIXES = (".keras", ".weights.h5")
WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema")


@dataclass
class Checkpoint:
    """A checkpoint's tensors (PyTorch names) and what lies beside it.

    Args:
        path: the file.
        tensors: ``{key: array}``; empty for Keras files.
        kind: ``"torch"`` (safetensors or .pth state_dict) or ``"keras"``.
        config: a timm ``config.json`` beside the file, if any.
    """

    path: Path
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "torch"
    config: dict[str, Any] | None = None


def kind_of(path: str | Path) -> str:
    """``"safetensors"``, ``"torch"`` or ``"keras"`` from the file name; a UserError otherwise."""
    name = Path(path).name.lower()
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    if name.endswith(KERAS_SUFFIXES):
        return "keras"
    raise UserError(
        f"weights {path}: unknown file type. Expected .safetensors, .pth / .pt (a PyTorch "
        "state_dict), .keras or .weights.h5."
    )


def check_exists(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"weights: no such file: {path} (a relative path is read from the current folder, "
            f"{Path.cwd()})"
        )
    return path


def read_checkpoint(path: str | Path, keys_only: bool = False) -> Checkpoint:
    """Read a PyTorch-layout checkpoint (safetensors or .pth); Keras files give an empty one.

    Args:
        path: the file.
        keys_only: arrays may be left unread (zero-size placeholders): for recognising the
            layout cheaply.
    """
    path = check_exists(path)
    kind = kind_of(path)
    if kind == "keras":
        return Checkpoint(path, kind="keras", config=_sidecar(path))
    if kind == "safetensors":
        tensors = _read_safetensors(path, keys_only)
    else:
        tensors = _read_torch(path, keys_only)
    return Checkpoint(path, tensors, "torch", _sidecar(path))


def _sidecar(path: Path) -> dict[str, Any] | None:
    cfg = path.with_name("config.json")
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "pretrained_cfg" in data else None


def _read_safetensors(path: Path, keys_only: bool) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(path), framework="np") as f:
            keys = list(f.keys())
            if keys_only:
                return dict.fromkeys(keys, np.zeros(0, "float32"))
            bf16 = []
            for key in keys:
                try:
                    out[key] = f.get_tensor(key)
                except (TypeError, ValueError):  # bfloat16: NumPy has no such dtype
                    bf16.append(key)
        if bf16:
            out.update(_read_bf16(path, bf16))
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file is the user's
        raise UserError(f"weights {path}: not a readable safetensors file ({err})") from err
    return out


def _read_bf16(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """bfloat16 tensors widened to float32 (the upper 16 bits of a float32)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for key in keys:
            info = header[key]
            if info["dtype"] != "BF16":
                raise UserError(
                    f"weights {path}: tensor {key} has unsupported dtype {info['dtype']}"
                )
            start, end = info["data_offsets"]
            f.seek(base + start)
            raw = np.frombuffer(f.read(end - start), dtype="<u2").astype("<u4") << 16
            out[key] = raw.view("<f4").reshape(info["shape"])
    return out


def _read_torch(path: Path, keys_only: bool = False) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UserError(
            f"weights {path}: reading a PyTorch .pth/.pt file needs torch, which is not "
            "installed: pip install 'kerasdl[torch]', or convert the file to .safetensors "
            "(safetensors.torch.save_file(state_dict, 'model.safetensors')) where torch is."
        ) from None
    obj = None
    if keys_only:  # memory-mapped: the names without reading the tensors
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - an old (non-zip) file: read it whole below
            obj = None
    if obj is None:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - corrupt, or pickled code weights_only refuses
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"weights {path}: torch.load failed ({first})") from err
    state = unwrap_state_dict(obj)
    if state is None:
        raise UserError(
            f"weights {path}: not a state_dict (a dict of tensors, possibly under "
            f"{' / '.join(WRAPPERS)}). Received: {type(obj).__name__}"
        )
    if keys_only:
        return dict.fromkeys(state, np.zeros(0, "float32"))
    return {k: _to_numpy(v) for k, v in state.items()}


def unwrap_state_dict(obj: Any) -> dict[str, Any] | None:
    """The ``{name: tensor}`` dict in ``obj`` (itself, or under a training checkpoint's key),
    without DataParallel's ``module.`` prefix; None if there is none."""
    if not isinstance(obj, dict):
        return None
    if obj and all(hasattr(v, "shape") for v in obj.values()):
        state = obj
    else:
        inner = [obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)]
        if not inner:
            return None
        state = inner[0]
        if not all(hasattr(v, "shape") for v in state.values()):
            return None
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _to_numpy(tensor: Any) -> np.ndarray:
    t = tensor.detach().cpu()
    if t.is_floating_point() and t.element_size() < 4:
        t = t.float()  # half / bfloat16 -> float32
    return t.numpy()
