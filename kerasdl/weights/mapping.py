"""Map a checkpoint's tensors onto a Keras model's variables, by name, checked as a whole.

:func:`plan_assignment` computes every variable's new value (layout converted: PyTorch's OIHW
convolutions to Keras's HWIO, depthwise ``(C*m, 1, kh, kw)`` to ``(kh, kw, C, m)``, linear
``(out, in)`` transposed, a linear layer after a flatten re-ordered from channels-first to
channels-last, packed attention projections split and reshaped to ``EinsumDense`` kernels, ViT
position embeddings resized to the model's patch grid) and collects every problem before anything
is assigned: a model is never half loaded. A classifier of another size (``num_classes``) is left
as initialised and reported; any other missing, unexpected or differently shaped tensor is one
:class:`~kerasdl.errors.UserError` naming the first few and the count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from kerasdl.errors import UserError
from kerasdl.weights.rules import LEAF, SIGNATURES, Format

SHOW = 3  # tensors named per kind of problem


@dataclass
class Plan:
    """What loading will do: ``values`` to assign and what the report says."""

    values: list[tuple[Any, np.ndarray]] = field(default_factory=list)
    head: str = "loaded"
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def natural_key(name: str) -> tuple:
    """Sort key that orders ``features.2`` before ``features.10``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("."))


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:SHOW])
    return shown + (f", ... ({len(items)} in all)" if len(items) > SHOW else "")


def guess_architecture(keys: list[str]) -> str:
    """What a checkpoint's keys look like (for the wrong-architecture message)."""
    for label, pattern in SIGNATURES:
        if any(re.search(pattern, k) for k in keys):
            return f"a {label} checkpoint"
    return "no architecture kerasdl knows"


def pick_format(formats: tuple[Format, ...], keys: list[str], where: str, family: str) -> Format:
    """The first layout whose signature keys are all present; a UserError naming what the
    checkpoint looks like otherwise."""
    for fmt in formats:
        if all(any(re.search(p, k) for k in keys) for p in fmt.signature):
            return fmt
    sources = " or ".join(dict.fromkeys(f.source for f in formats))
    shown = [k for k in keys if not k.endswith("num_batches_tracked")]
    raise UserError(
        f"{where}: not a {family} checkpoint in {sources} layout: it looks like "
        f"{guess_architecture(keys)} ({len(shown)} tensors; first: {_first(sorted(shown))})."
    )


def _module_of(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


class _Mapper:
    """Keras variable path -> checkpoint key, by a :class:`Format`'s rules."""

    def __init__(self, fmt: Format, keras_modules: list[str], torch_keys: list[str]) -> None:
        self.fmt = fmt
        self.modules = set(keras_modules)
        self.pairs: dict[str, str] = {}
        self.problems: list[str] = []
        torch_modules = sorted(
            {_module_of(k) for k in torch_keys if not k.endswith("num_batches_tracked")},
            key=natural_key,
        )
        for keras_re, torch_re in fmt.ordered:
            ks = [m for m in keras_modules if re.search(keras_re, m)]
            ts = [
                m
                for m in torch_modules
                if re.search(torch_re, m) and not re.search(fmt.torch_head, m + ".")
            ]
            if len(ks) != len(ts):
                self.problems.append(
                    f"{len(ts)} checkpoint modules {torch_re} ({_first(ts)}) for {len(ks)} "
                    f"Keras layers {keras_re} ({_first(ks)})"
                )
            self.pairs.update(zip(ks, ts, strict=False))

    def key(self, path: str) -> str:
        for pattern, repl in self.fmt.tensors:
            if re.search(pattern, path):
                return re.sub(pattern, repl, path)
        module, _, leaf = path.rpartition("/")
        leaf = LEAF.get(leaf, leaf)
        if module in self.pairs:
            target = self.pairs[module]
        else:
            target = module
            for rule in self.fmt.renames:
                match = re.search(rule.pattern, target)
                if match is None or (rule.when and match.expand(rule.when) not in self.modules):
                    continue
                target = re.sub(rule.pattern, rule.repl, target)
            target = target.replace("/", ".")
        return f"{target}.{leaf}" if target else leaf


def _owners(model: keras.Model) -> dict[int, keras.layers.Layer]:
    owners: dict[int, keras.layers.Layer] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for w in layer.weights:  # parents come first: the innermost owner is written last
            owners[id(w)] = layer
    return owners


def unique_variables(model: keras.Model) -> list[Any]:
    seen, out = set(), []
    for v in model.weights:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def convert(t: np.ndarray, shape: tuple, layer: Any, flatten_side: int | None) -> np.ndarray:
    """A PyTorch tensor in the Keras variable's layout (shape checked by the caller)."""
    if t.ndim == 4 and len(shape) == 4:
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C*m, 1, kh, kw) -> (kh, kw, C, m)
            return t.reshape(shape[2], shape[3], *t.shape[2:]).transpose(2, 3, 0, 1)
        return t.transpose(2, 3, 1, 0)  # (out, in/g, kh, kw) -> (kh, kw, in/g, out)
    if t.ndim == 2 and len(shape) >= 2:  # nn.Linear (out, in)
        if flatten_side:  # input flattened as (C, H, W) by torch, (H, W, C) by Keras
            out, n = t.shape
            c, s = n // (flatten_side * flatten_side), flatten_side
            t = t.reshape(out, c, s, s).transpose(2, 3, 1, 0).reshape(n, out)
        else:
            t = t.T
        if len(shape) == 3 and t.size == math.prod(shape):  # EinsumDense (D, h, dh) / (h, dh, D)
            t = t.reshape(shape)
        return t
    if t.ndim == 1 and len(shape) == 2 and t.size == math.prod(shape):  # EinsumDense bias (h, dh)
        return t.reshape(shape)
    return t


def _resize_pos(t: np.ndarray, shape: tuple) -> np.ndarray | None:
    """ViT position embeddings ``(1, 1 + g*g, D)`` resized to the model's grid, or None."""
    from kerasdl.layers.patch_embed import resize_position_embeddings

    old, new = math.isqrt(t.shape[1] - 1), math.isqrt(shape[1] - 1)
    if (
        t.ndim != 3
        or t.shape[2] != shape[2]
        or old * old != t.shape[1] - 1
        or new * new != shape[1] - 1
    ):
        return None
    return resize_position_embeddings(t, (old, old), (new, new), 1, "bicubic")


def plan_assignment(
    model: keras.Model, fmt: Format, tensors: dict[str, np.ndarray], where: str, hint: str = ""
) -> Plan:
    """Every variable's value from ``tensors`` (see the module docstring); raises before
    anything is assigned.

    Args:
        model: the Keras model.
        fmt: the checkpoint's layout (``Format("keras", ...)``: keys are Keras variable paths).
        tensors: the checkpoint.
        where: how messages name the checkpoint and model (``"weights x.pth for resnet18"``).
        hint: appended to a mismatch message.
    """
    tensors = dict(tensors)
    for old, new in fmt.aliases:
        tensors = {re.sub(old, new, k): v for k, v in tensors.items()}
    variables = unique_variables(model)
    owners = _owners(model)
    keras_fmt = fmt.source == "keras"
    modules = list(dict.fromkeys(v.path.rpartition("/")[0] for v in variables))
    mapper = _Mapper(fmt, modules, list(tensors))
    plan = Plan()
    missing, mismatched, used, head_vars = [], [], set(), []
    head_shapes: list[str] = []
    for var in variables:
        path, shape = var.path, tuple(var.shape)
        is_head = re.search(fmt.keras_head, path) is not None
        head_vars += [path] if is_head else []
        key = path if keras_fmt else mapper.key(path)
        base, _, chunk = key.partition("#")
        if base not in tensors:
            if is_head:
                plan.head = "re-initialised: the checkpoint has no classifier"
            else:
                missing.append(f"{base} (for {path})")
            continue
        used.add(base)
        t = tensors[base]
        if chunk:
            i, n = (int(c) for c in chunk.split(":"))
            t = np.split(t, n, axis=0)[i] if t.shape[0] % n == 0 else t
        if not keras_fmt:
            flat = next((c for p, c in fmt.flatten if re.search(p, path.rpartition("/")[0])), None)
            try:
                t = convert(t, shape, owners.get(id(var)), flat)
            except ValueError:
                pass  # reported as a shape mismatch below
        if tuple(t.shape) != shape and path.endswith("pos_embedding"):
            resized = _resize_pos(t, shape)
            if resized is not None:
                plan.notes.append(f"position embeddings {base} resized {t.shape[1]} -> {shape[1]}")
                t = resized
        if tuple(t.shape) != shape:
            if is_head and t.ndim == len(shape) and t.shape[:-1] == shape[:-1]:
                head_shapes.append(f"{t.shape[-1]} classes in the checkpoint, {shape[-1]} here")
                continue
            mismatched.append(f"{base} {tuple(tensors[base].shape)} for {path} {shape}")
            continue
        plan.values.append((var, np.asarray(t, dtype=var.dtype)))
    if head_shapes:
        plan.head = f"re-initialised ({head_shapes[0]})"
        plan.values = [(v, a) for v, a in plan.values if not re.search(fmt.keras_head, v.path)]
    unexpected = []
    for key in tensors:
        if key in used or key.endswith("num_batches_tracked"):
            continue
        if not keras_fmt and re.search(fmt.torch_head, key) and not head_vars:
            plan.head = "dropped (the model has no classifier: num_classes=0)"
            plan.ignored.append(key)
        elif fmt.optional and re.search(fmt.optional, key):
            plan.ignored.append(key)
        else:
            unexpected.append(key)
    problems = list(mapper.problems)
    if missing:
        problems.append(f"{len(missing)} missing: {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_first(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} of another shape: {_first(mismatched)}")
    if problems:
        raise UserError(f"{where} ({fmt.source} layout) do not fit: {'; '.join(problems)}.{hint}")
    return plan
