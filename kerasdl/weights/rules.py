"""How torchvision and timm parameter names map onto the zoo's Keras variables: data, per family.

The zoo's layer names mirror torchvision's module paths (``layer1_0/conv1`` is ``layer1.0.conv1``),
so a family needs a few rules, not code:

* ``tensors``: regex on the whole Keras variable path -> the checkpoint key (ViT's class token and
  position embedding, and the query / key / value kernels that are chunks ``#i:3`` of one packed
  ``in_proj`` / ``qkv`` tensor);
* ``ordered``: Keras modules matching a regex, in model order, pair with the checkpoint's modules
  matching another, in natural order (for ``nn.Sequential`` indices: ``features.0``,
  ``features.3``, ... of VGG and AlexNet, ``block.0.0`` of torchvision's MBConv);
* ``renames``: ``re.sub`` rules applied in turn to a Keras module path (``/`` becomes ``.``
  afterwards); a rule with ``when`` applies only if a sibling Keras module exists (timm's
  EfficientNet blocks name their norms by position, which depends on the expansion conv);
* ``aliases``: rewrite older checkpoint keys to today's (torchvision's own ``_load_from_state_dict``
  remaps: DenseNet ``norm.1`` -> ``norm1``, ViT ``mlp.linear_1`` -> ``mlp.0``).

The variable's last name maps by :data:`LEAF` (``kernel`` -> ``weight``, ``moving_variance`` ->
``running_var``, ...). A format's ``signature`` keys identify it; ``torch_head`` names its
classifier (dropped with a note when the model has no head); ``optional`` keys may be left
unused (GoogLeNet's auxiliary classifiers when the model has none, as torchvision drops them).

References:
    torchvision ``models/*.py`` (module names, ``_load_from_state_dict`` key remaps, ``Weights``
    transforms); timm ``models/_builder.py`` / ``_helpers.py`` (``load_state_dict``,
    ``pretrained_cfg``); keras-hub ``src/utils/timm/convert_*.py`` (per-family converters).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

Repl = str | Callable[[re.Match], str]

# Keras variable name -> PyTorch parameter / buffer name.
LEAF = {
    "kernel": "weight",
    "depthwise_kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
QKV = {"query": 0, "key": 1, "value": 2}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocessing:
    """The input preprocessing a checkpoint was trained with (images scaled to [0, 1] first).

    Args:
        mean: per-channel mean subtracted.
        std: per-channel standard deviation divided.
        interpolation: the resize filter of the source's evaluation transform (informational:
            kerasdl's pipeline resizes bilinearly with antialiasing).
        crop_pct: the source's centre-crop fraction at evaluation (``data.crop.crop_fraction``).
        note: where the values come from.
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    note: str = "torchvision's ImageNet transform"

    def to_json(self) -> dict:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: dict) -> Preprocessing:
        return cls(
            tuple(float(v) for v in d["mean"]),
            tuple(float(v) for v in d["std"]),
            str(d.get("interpolation", "bilinear")),
            float(d.get("crop_pct", 0.875)),
            str(d.get("note", "")),
        )

    def text(self) -> str:
        mean = ", ".join(f"{v:g}" for v in self.mean)
        std = ", ".join(f"{v:g}" for v in self.std)
        return (
            f"mean ({mean}) std ({std}), {self.interpolation} resize, crop {self.crop_pct:g} "
            f"({self.note})"
        )


TORCHVISION = Preprocessing()
TIMM = Preprocessing(interpolation="bicubic", note="timm's default for the architecture")


@dataclass(frozen=True)
class Rename:
    """``re.sub(pattern, repl, path)`` on a Keras module path; with ``when``, only if the Keras
    module ``match.expand(when)`` exists too."""

    pattern: str
    repl: Repl
    when: str | None = None


@dataclass(frozen=True)
class Format:
    """One checkpoint layout of a family.

    Args:
        source: who writes it (``torchvision``, ``timm``, or both when the names agree).
        signature: regexes each matched by some checkpoint key (how the layout is recognised).
        torch_head: regex of the classifier's keys.
        keras_head: regex of the Keras classifier variables (re-initialised for another
            ``num_classes``).
        tensors, ordered, renames, aliases: see the module docstring.
        optional: regex of checkpoint keys that may stay unused.
        flatten: ``(Keras module regex, side)`` of the linear layers that read a flattened
            ``(C, side, side)`` map (PyTorch flattens channels first, Keras channels last).
        preprocessing: the source's input transform.
    """

    source: str
    signature: tuple[str, ...]
    torch_head: str
    keras_head: str = r"^head/"
    tensors: tuple[tuple[str, Repl], ...] = ()
    ordered: tuple[tuple[str, str], ...] = ()
    renames: tuple[Rename, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()
    optional: str | None = None
    flatten: tuple[tuple[str, int], ...] = ()
    preprocessing: Preprocessing = field(default=TORCHVISION)


def _qkv(prefix: str, packed: str) -> Callable[[re.Match], str]:
    """Query / key / value variable -> chunk ``#i:3`` of the packed projection."""
    return lambda m: f"{prefix.format(m[1])}.{packed}{LEAF[m[3]]}#{QKV[m[2]]}:3"


_QKV_RE = r"^encoder_layer_(\d+)/self_attention/(query|key|value)/(kernel|bias)$"

RESNET = Format(
    "torchvision/timm",
    signature=(r"^layer1\.0\.conv1\.weight$", r"^conv1\.weight$"),
    torch_head=r"^fc\.",
    renames=(
        Rename(r"^norm1$", "bn1"),
        Rename(r"^layer(\d)_(\d+)/", r"layer\1/\2/"),
        Rename(r"/norm(\d)$", r"/bn\1"),
        Rename(r"/downsample_conv$", "/downsample/0"),
        Rename(r"/downsample_norm$", "/downsample/1"),
        Rename(r"^head$", "fc"),
    ),
)

DENSENET = Format(
    "torchvision/timm",
    signature=(r"^features\.denseblock1\.denselayer1\.",),
    torch_head=r"^classifier\.",
    renames=(Rename(r"^head$", "classifier"), Rename(r"^(?!classifier$)", "features/")),
    aliases=(
        (
            r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_\w+))$",
            r"\1\2",
        ),
    ),
)

VGG = Format(
    "torchvision",
    signature=(r"^features\.0\.weight$", r"^classifier\.6\.weight$"),
    torch_head=r"^classifier\.6\.",
    flatten=((r"^fc6$", 7),),
    ordered=((r"^stage\d+_(conv|norm)\d+$", r"^features\."), (r"^fc\d$", r"^classifier\.")),
    renames=(Rename(r"^head$", "classifier/6"),),
)

ALEXNET = Format(
    "torchvision",
    signature=(r"^features\.0\.weight$", r"^classifier\.6\.weight$"),
    torch_head=r"^classifier\.6\.",
    flatten=((r"^fc6$", 6),),
    ordered=((r"^conv\d$", r"^features\."), (r"^fc\d$", r"^classifier\.")),
    renames=(Rename(r"^head$", "classifier/6"),),
)

_BRANCH = {"reduce": 0, "conv": 1, "proj": 1}
GOOGLENET = Format(
    "torchvision",
    signature=(r"^inception3a\.branch1\.conv\.weight$",),
    torch_head=r"^(fc|aux\d\.fc2)\.",
    keras_head=r"^(head|aux\d/fc2)/",
    renames=(
        Rename(r"/norm$", "/bn"),
        Rename(r"/branch(\d)_(reduce|conv|proj)/", lambda m: f"/branch{m[1]}/{_BRANCH[m[2]]}/"),
        Rename(r"^head$", "fc"),
    ),
    optional=r"^aux\d\.",
    flatten=((r"^aux\d/fc1$", 4),),
    # torchvision's pretrained GoogLeNet sets transform_input=True: ImageNet-standardised input
    # is turned into (x - 0.5) / 0.5 of the original weights, which is this standardisation.
    preprocessing=Preprocessing(HALF, HALF, note="torchvision's transform_input=True: (x-0.5)/0.5"),
)

EFFICIENTNET_TV = Format(
    "torchvision",
    signature=(r"^features\.1\.0\.block\.0\.0\.weight$",),
    torch_head=r"^classifier\.1\.",
    ordered=((r"^(stem_|stage\d|top_)", r"^features\."),),
    renames=(Rename(r"^head$", "classifier/1"),),
    preprocessing=Preprocessing(interpolation="bicubic"),
)


def _timm_block(m: re.Match) -> str:
    return f"blocks/{int(m[1]) - 1}/{m[2]}/"


EFFICIENTNET_TIMM = Format(
    "timm",
    signature=(r"^conv_stem\.weight$", r"^blocks\.0\.0\.conv_dw\.weight$"),
    torch_head=r"^classifier\.",
    renames=(
        # inverted residual (with expansion): conv_pw bn1 conv_dw bn2 se conv_pwl bn3
        Rename(r"^(stage\d+_block\d+)/depthwise_bn$", r"\1/bn2", when=r"\1/expand_conv"),
        Rename(r"^(stage\d+_block\d+)/project_conv$", r"\1/conv_pwl", when=r"\1/expand_conv"),
        Rename(r"^(stage\d+_block\d+)/project_bn$", r"\1/bn3", when=r"\1/expand_conv"),
        # depthwise-separable (no expansion): conv_dw bn1 se conv_pw bn2
        Rename(r"/expand_conv$", "/conv_pw"),
        Rename(r"/expand_bn$", "/bn1"),
        Rename(r"/depthwise_conv$", "/conv_dw"),
        Rename(r"/depthwise_bn$", "/bn1"),
        Rename(r"/project_conv$", "/conv_pw"),
        Rename(r"/project_bn$", "/bn2"),
        Rename(r"/se/fc1$", "/se/conv_reduce"),
        Rename(r"/se/fc2$", "/se/conv_expand"),
        Rename(r"^stage(\d+)_block(\d+)/", _timm_block),
        Rename(r"^stem_conv$", "conv_stem"),
        Rename(r"^stem_bn$", "bn1"),
        Rename(r"^top_conv$", "conv_head"),
        Rename(r"^top_bn$", "bn2"),
        Rename(r"^head$", "classifier"),
    ),
    preprocessing=TIMM,
)

VIT_TV = Format(
    "torchvision",
    signature=(r"^encoder\.layers\.encoder_layer_0\.", r"^class_token$"),
    torch_head=r"^heads\.head\.",
    tensors=(
        (r"^patch_embed/class_token$", "class_token"),
        (r"^patch_embed/pos_embedding$", "encoder.pos_embedding"),
        (_QKV_RE, _qkv("encoder.layers.encoder_layer_{}.self_attention", "in_proj_")),
    ),
    renames=(
        Rename(r"^patch_embed/conv_proj$", "conv_proj"),
        Rename(r"^encoder_layer_(\d+)/", r"encoder/layers/encoder_layer_\1/"),
        Rename(r"/attention_output$", "/out_proj"),
        Rename(r"/mlp/fc1$", "/mlp/0"),
        Rename(r"/mlp/fc2$", "/mlp/3"),
        Rename(r"^encoder_ln$", "encoder/ln"),
        Rename(r"^pre_logits_fc$", "heads/pre_logits"),
        Rename(r"^head$", "heads/head"),
    ),
    aliases=((r"\.mlp\.linear_1\.", ".mlp.0."), (r"\.mlp\.linear_2\.", ".mlp.3.")),
)

VIT_TIMM = Format(
    "timm",
    signature=(r"^blocks\.0\.attn\.qkv\.weight$", r"^cls_token$"),
    torch_head=r"^head\.",
    tensors=(
        (r"^patch_embed/class_token$", "cls_token"),
        (r"^patch_embed/pos_embedding$", "pos_embed"),
        (_QKV_RE, _qkv("blocks.{}.attn", "qkv.")),
    ),
    renames=(
        Rename(r"^patch_embed/conv_proj$", "patch_embed/proj"),
        Rename(r"^encoder_layer_(\d+)/", r"blocks/\1/"),
        Rename(r"/ln_(\d)$", r"/norm\1"),
        Rename(r"/self_attention/attention_output$", "/attn/proj"),
        Rename(r"^encoder_ln$", "norm"),
    ),
    # timm's ViT weights (augreg) are trained on (x - 0.5) / 0.5
    preprocessing=Preprocessing(HALF, HALF, "bicubic", 0.9, "timm's ViT default (augreg)"),
)

# registry family -> the layouts its checkpoints come in (tried in order)
FAMILIES: dict[str, tuple[Format, ...]] = {
    "resnet": (RESNET,),
    "densenet": (DENSENET,),
    "vgg": (VGG,),
    "alexnet": (ALEXNET,),
    "googlenet": (GOOGLENET,),
    "efficientnet": (EFFICIENTNET_TV, EFFICIENTNET_TIMM),
    "vit": (VIT_TV, VIT_TIMM),
}

# What a checkpoint of another family looks like (for the wrong-architecture message).
SIGNATURES: tuple[tuple[str, str], ...] = (
    ("resnet / resnext / wide_resnet", r"^layer1\.0\.conv1\.weight$"),
    ("densenet", r"^features\.denseblock1\."),
    ("googlenet", r"^inception3a\."),
    ("efficientnet (torchvision)", r"^features\.1\.0\.block\."),
    ("efficientnet (timm)", r"^blocks\.0\.0\.conv_dw\."),
    ("vit (torchvision)", r"^encoder\.layers\.encoder_layer_0\."),
    ("vit (timm)", r"^blocks\.0\.attn\.qkv\."),
    ("vgg / alexnet", r"^classifier\.6\.weight$"),
)
