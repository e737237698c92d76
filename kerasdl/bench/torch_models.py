"""PyTorch peers of the benchmark: torchvision's own models, and two hand-written references.

Every architecture torchvision has is taken from torchvision itself (imported beside the CPU
build of PyTorch by :func:`kerasdl.interop.import_torchvision`): :data:`TORCHVISION` maps a
registry name to its torchvision constructor, built with torchvision's defaults (GoogLeNet
without the auxiliary classifiers, as kerasdl's ``googlenet``). kerasdl's ``alexnet_owt`` is
torchvision's ``alexnet`` (Krizhevsky 2014's "one weird trick" variant); kerasdl's ``alexnet``
is the 2012 paper's network, which torchvision does not have. Parameter counts equal kerasdl's
(a test checks every zoo representative).

torchvision has neither the CIFAR ResNets nor the DARTS network; they are written here:

* :class:`CifarResNet`: He et al. 2016 section 4.2 with option-A shortcuts (Idelbayev's
  ``resnet_cifar10``), 269,722 parameters for ResNet-20 as kerasdl's ``resnet20``.
* :class:`DartsNetwork`: the reference ``NetworkCIFAR`` (quark0/darts ``cnn/model.py`` and
  ``operations.py``) for a genotype, without the auxiliary tower and drop-path (kerasdl's
  ``darts_net`` defaults): 3,349,342 parameters for DARTS_V2, C=36, 20 cells, 10 classes.

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# registry name -> (torchvision.models constructor, extra keyword arguments)
TORCHVISION: dict[str, tuple[str, dict]] = {
    "alexnet_owt": ("alexnet", {}),
    **{f"vgg{d}{bn}": (f"vgg{d}{bn}", {}) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    **{f"resnet{d}": (f"resnet{d}", {}) for d in (18, 34, 50, 101, 152)},
    "resnext50_32x4d": ("resnext50_32x4d", {}),
    "resnext101_32x8d": ("resnext101_32x8d", {}),
    "wide_resnet50_2": ("wide_resnet50_2", {}),
    "wide_resnet101_2": ("wide_resnet101_2", {}),
    **{f"densenet{d}": (f"densenet{d}", {}) for d in (121, 161, 169, 201)},
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": True}),
    **{f"efficientnet_b{i}": (f"efficientnet_b{i}", {}) for i in range(8)},
    **{f"vit_{v}": (f"vit_{v}", {"image_size": None}) for v in ("b_16", "b_32", "l_16", "l_32")},
}


def _bn(c: int, affine: bool = True) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1, affine=affine)


class BasicBlock(nn.Module):
    """The CIFAR ResNet's block with an option-A shortcut (subsample, zero-pad the channels)."""

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.stride = stride
        self.pad = planes - cin

    def _short(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1 or self.pad:
            x = x[:, :, :: self.stride, :: self.stride]
            return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._short(x))


class CifarResNet(nn.Module):
    """He et al. 2016 section 4.2: 6n + 2 layers, 16/32/64 filters, option-A shortcuts."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_ch: int = 3):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.bn1 = _bn(16)
        layers, cin = [], 16
        for i, planes in enumerate((16, 32, 64)):
            for j in range(n):
                layers.append(BasicBlock(cin, planes, 2 if i > 0 and j == 0 else 1))
                cin = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- DARTS: quark0/darts cnn/operations.py and cnn/model.py -----------------------------------


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, affine: bool = True):
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), _bn(cout, affine))


class DilConv(nn.Sequential):
    def __init__(self, c: int, k: int, stride: int, padding: int, dilation: int):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c, c, k, stride, padding, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            _bn(c),
        )


class SepConv(nn.Sequential):
    def __init__(self, c: int, k: int, stride: int, padding: int):
        super().__init__(
            DilConv(c, k, stride, padding, 1),
            DilConv(c, k, 1, padding, 1),
        )


class FactorizedReduce(nn.Module):
    def __init__(self, cin: int, cout: int, affine: bool = True):
        super().__init__()
        self.conv_1 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.bn = _bn(cout, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


DARTS_OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "none": lambda c, s: Zero(s),
    "avg_pool_3x3": lambda c, s: nn.AvgPool2d(3, s, 1, count_include_pad=False),
    "max_pool_3x3": lambda c, s: nn.MaxPool2d(3, s, 1),
    "skip_connect": lambda c, s: nn.Identity() if s == 1 else FactorizedReduce(c, c),
    "sep_conv_3x3": lambda c, s: SepConv(c, 3, s, 1),
    "sep_conv_5x5": lambda c, s: SepConv(c, 5, s, 2),
    "dil_conv_3x3": lambda c, s: DilConv(c, 3, s, 2, 2),
    "dil_conv_5x5": lambda c, s: DilConv(c, 5, s, 4, 2),
}


class DartsCell(nn.Module):
    def __init__(self, genotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev):
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c)
        self.pre1 = ReLUConvBN(c_p, c)
        gene = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.indices = [index for _, index in gene]
        self.ops = nn.ModuleList(
            DARTS_OPS[op](c, 2 if reduction and index < 2 else 1) for op, index in gene
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(len(self.ops) // 2):
            a, b = 2 * i, 2 * i + 1
            states.append(
                self.ops[a](states[self.indices[a]]) + self.ops[b](states[self.indices[b]])
            )
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsNetwork(nn.Module):
    """The reference ``NetworkCIFAR`` (no auxiliary tower, no drop-path)."""

    def __init__(self, genotype, c: int = 36, layers: int = 20, num_classes: int = 10, in_ch=3):
        super().__init__()
        c_curr = 3 * c
        self.stem = nn.Sequential(nn.Conv2d(in_ch, c_curr, 3, padding=1, bias=False), _bn(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        cells, reduction_prev = [], False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = DartsCell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, len(cell.concat) * c_curr
        self.cells = nn.ModuleList(cells)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))


def _cifar(depth: int) -> Callable[..., nn.Module]:
    return lambda num_classes, in_ch, size: CifarResNet(depth, num_classes, in_ch)


def _darts(num_classes: int, in_ch: int, size: int) -> nn.Module:
    from kerasdl.models.genotype import load_genotype

    return DartsNetwork(load_genotype("DARTS_V2"), 36, 20, num_classes, in_ch)


HAND_WRITTEN: dict[str, Callable[..., nn.Module]] = {
    **{f"resnet{d}": _cifar(d) for d in (20, 32, 44, 56, 110)},
    "darts_net": _darts,
}
TORCH_MODELS = sorted({*TORCHVISION, *HAND_WRITTEN})


def is_torchvision(name: str) -> bool:
    return name in TORCHVISION


def build_torch_model(
    name: str, num_classes: int, channels: int = 3, input_size: int = 224
) -> nn.Module:
    """The PyTorch peer of registry model ``name`` (KeyError when there is none)."""
    if name in HAND_WRITTEN:
        return HAND_WRITTEN[name](num_classes, channels, input_size)
    ctor, kwargs = TORCHVISION[name]
    if channels != 3:
        raise ValueError(f"the torchvision peer of {name} takes 3 input channels")
    from kerasdl.interop import import_torchvision

    models = import_torchvision().models
    if "image_size" in kwargs:
        kwargs = {**kwargs, "image_size": input_size}
    return getattr(models, ctor)(num_classes=num_classes, **kwargs)
