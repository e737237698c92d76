"""Reference checkpoints for the weight-loading tests, made with the real torchvision and timm.

Each fixture is a reference model with random weights chosen to be telling (batch-norm running
statistics randomised, norm scales in [0.5, 1.5], no tensor left at zero: a loader that drops,
transposes or swaps a tensor changes the logits), saved as ``NAME.safetensors`` and ``NAME.pth``
(its ``state_dict``), and the reference's logits in eval mode on a fixed input (``NAME.npz``:
``x`` NHWC, ``logits``). The tests (tests/test_weights*.py) call :func:`make_fixture` into a
temporary folder and compare kerasdl's logits with these; nothing here imports kerasdl's models.

Small inputs (64x64 for the CNNs, 32x32 for the ViTs) and, where the family allows, fewer blocks
or narrower fully connected layers (same key names: the loader's rules are what is tested) keep
CI fast; ``SLOW`` fixtures are the full-size torchvision builders.

Usage:
    python scripts/make_weight_fixtures.py OUT_DIR [NAME ...]    # default: every fixture
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Spec:
    """One reference: how to build it, and the kerasdl model that should compute the same."""

    build: Callable[[], Any]
    model: str  # kerasdl registry name
    kwargs: dict[str, Any] = field(default_factory=dict)  # kerasdl constructor overrides
    side: int = 64
    num_classes: int = 1000


def _tv() -> Any:
    from kerasdl.interop import import_torchvision

    return import_torchvision()


def _timm() -> Any:
    from kerasdl.interop import import_timm

    return import_timm()


def _small_classifier(net: Any, layout: str, width: int = 256) -> Any:
    """Replace torchvision's 4096-wide classifier by a ``width``-wide one with the same indices."""
    import torch.nn as nn

    feat = net.classifier[1 if layout == "alexnet" else 0].in_features
    if layout == "alexnet":
        net.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(feat, width), nn.ReLU(), nn.Dropout(),
            nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1000),
        )  # fmt: skip
    else:
        net.classifier = nn.Sequential(
            nn.Linear(feat, width), nn.ReLU(), nn.Dropout(),
            nn.Linear(width, width), nn.ReLU(), nn.Dropout(), nn.Linear(width, 1000),
        )  # fmt: skip
    return net


def _resnet(block: str, depths: list[int], **kw: Any) -> Callable[[], Any]:
    def build() -> Any:
        resnet = _tv().models.resnet
        cls = resnet.Bottleneck if block == "bottleneck" else resnet.BasicBlock
        return resnet.ResNet(cls, depths, **kw)

    return build


def _tv_vit(side: int, layers: int = 4) -> Any:
    vt = _tv().models.vision_transformer
    return vt.VisionTransformer(side, 16, layers, 3, 192, 768)


SPECS: dict[str, Spec] = {
    "tv_resnet18": Spec(lambda: _tv().models.resnet18(), "resnet18"),
    "tv_resnext": Spec(
        _resnet("bottleneck", [1, 1, 1, 1], groups=32, width_per_group=4),
        "resnext50_32x4d",
        {"depths": [1, 1, 1, 1]},
    ),
    "tv_wide_resnet": Spec(
        _resnet("bottleneck", [1, 1, 1, 1], width_per_group=128),
        "wide_resnet50_2",
        {"depths": [1, 1, 1, 1]},
    ),
    "tv_vgg11": Spec(
        lambda: _small_classifier(_tv().models.vgg11(), "vgg"), "vgg11", {"fc_units": 256}
    ),
    "tv_vgg11_bn": Spec(
        lambda: _small_classifier(_tv().models.vgg11_bn(), "vgg"), "vgg11_bn", {"fc_units": 256}
    ),
    "tv_alexnet": Spec(
        lambda: _small_classifier(_tv().models.alexnet(), "alexnet"),
        "alexnet_owt",
        {"fc_units": 256},
    ),
    "tv_densenet": Spec(
        lambda: _tv().models.densenet.DenseNet(block_config=(2, 3, 2, 2)),
        "densenet121",
        {"block_config": [2, 3, 2, 2]},
    ),
    "tv_googlenet": Spec(
        lambda: _tv().models.googlenet(aux_logits=True, init_weights=False), "googlenet"
    ),
    "tv_efficientnet_b0": Spec(lambda: _tv().models.efficientnet_b0(), "efficientnet_b0"),
    "tv_vit": Spec(lambda: _tv_vit(32), "vit_ti_16", {"num_layers": 4}, side=32),
    "timm_resnet18": Spec(lambda: _timm().create_model("resnet18"), "resnet18"),
    "timm_efficientnet_b0": Spec(
        lambda: _timm().create_model("efficientnet_b0"), "efficientnet_b0"
    ),
    "timm_densenet": Spec(
        lambda: _timm().create_model("densenet121", block_config=(2, 3, 2, 2)),
        "densenet121",
        {"block_config": [2, 3, 2, 2]},
    ),
    "timm_vit": Spec(
        lambda: _timm().create_model("vit_tiny_patch16_224", img_size=32, depth=4),
        "vit_ti_16",
        {"num_layers": 4},
        side=32,
    ),
}
SLOW: dict[str, Spec] = {
    "tv_resnet50": Spec(lambda: _tv().models.resnet50(), "resnet50"),
    "tv_densenet121": Spec(lambda: _tv().models.densenet121(), "densenet121"),
    "timm_densenet121": Spec(lambda: _timm().create_model("densenet121"), "densenet121"),
    "tv_vgg16": Spec(lambda: _tv().models.vgg16(), "vgg16"),
    "tv_efficientnet_b1": Spec(lambda: _tv().models.efficientnet_b1(), "efficientnet_b1"),
    "tv_vit_b_32": Spec(lambda: _tv().models.vit_b_32(), "vit_b_32", side=224),
    "timm_resnet50": Spec(lambda: _timm().create_model("resnet50"), "resnet50"),
    "timm_vit_small": Spec(
        lambda: _timm().create_model("vit_small_patch16_224", img_size=32), "vit_s_16", side=32
    ),
}
ALL = {**SPECS, **SLOW}


def telling_(net: Any, seed: int = 0) -> Any:
    """Give every parameter and buffer a value a wrong mapping would show (in place)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean":
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif leaf == "running_var":
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.ndim == 1 and leaf == "weight":  # norm scales
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.ndim == 1:  # biases, norm shifts
                t.copy_((torch.rand(t.shape, generator=g) - 0.5) * 0.2)
            elif not bool(t.abs().sum()):  # zero-initialised (ViT head, class token)
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return net


@dataclass
class Fixture:
    """The files of one fixture and what the test builds from them."""

    name: str
    safetensors: Path
    pth: Path
    x: np.ndarray  # NHWC float32
    logits: np.ndarray
    spec: Spec
    aux: dict[str, np.ndarray] = field(default_factory=dict)  # GoogLeNet's aux1 / aux2 logits

    def kwargs(self, **extra: Any) -> dict[str, Any]:
        """``create_model`` arguments for the matching kerasdl model."""
        s = self.spec
        return {
            "input_shape": (s.side, s.side, 3),
            "num_classes": s.num_classes,
            **s.kwargs,
            **extra,
        }


def make_fixture(name: str, out_dir: str | Path, seed: int = 0) -> Fixture:
    """Build reference ``name``, save its checkpoint (both formats) and logits into ``out_dir``."""
    import torch
    from safetensors.torch import save_file

    spec = ALL[name]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = telling_(spec.build(), seed).eval()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    st, pth = out / f"{name}.safetensors", out / f"{name}.pth"
    save_file(state, str(st))
    torch.save(state, str(pth))
    x = np.random.default_rng(seed).normal(size=(2, 3, spec.side, spec.side)).astype("float32")
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
        aux = _aux_logits(net, torch.from_numpy(x))
    x_nhwc = x.transpose(0, 2, 3, 1).copy()
    np.savez(out / f"{name}.npz", x=x_nhwc, logits=logits, **aux)
    return Fixture(name, st, pth, x_nhwc, logits, spec, aux)


def _aux_logits(net: Any, x: Any) -> dict[str, np.ndarray]:
    """GoogLeNet's auxiliary classifiers in eval mode, on the inputs they read (4a, 4d)."""
    if getattr(net, "aux1", None) is None:
        return {}
    seen: dict[str, Any] = {}
    hooks = [
        getattr(net, block).register_forward_hook(lambda m, i, o, k=key: seen.update({k: o}))
        for block, key in (("inception4a", "aux1"), ("inception4d", "aux2"))
    ]
    net(x)
    for h in hooks:
        h.remove()
    return {k: getattr(net, k)(v).numpy() for k, v in seen.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("names", nargs="*", help=f"default: all of {', '.join(ALL)}")
    args = parser.parse_args(argv)
    for name in args.names or list(ALL):
        f = make_fixture(name, args.out_dir)
        print(f"{name}: {f.safetensors} logits {f.logits.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
