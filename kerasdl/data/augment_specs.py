"""Recipe keys of every augmentation in ``data.augment``: one pydantic model per operation.

A spec is ``{"name": "<op>", **params}``; unknown keys, wrong types and impossible values are
rejected by :func:`validate_augment` with one line naming the entry, the key
and what was expected. Every operation also takes ``p``: the probability that an image goes
through it (default 1; 0.5 for ``random_erasing`` as in its paper).

The views of the semi- and self-supervised methods are spec lists too: :data:`VIEWS` names the
papers' defaults, :func:`view_specs` applies a method's recipe keys (``flip``, ``crop_scale``,
``jitter_strength``, ...) to one of them and :func:`validate_view` checks a list as a view
(no label-mixing operation). Pure Python: a recipe is checked before TensorFlow loads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kerasdl.config.errors import one_line
from kerasdl.errors import UserError, suggest

FillMode = Literal["reflect", "wrap", "constant", "nearest"]
Interpolation = Literal["bilinear", "nearest"]


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p: float = Field(1.0, ge=0.0, le=1.0)


class _Geometric(_Op):
    fill_mode: FillMode = "reflect"
    fill_value: float = 0.0
    interpolation: Interpolation = "bilinear"


class Flip(_Op):
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"


class Rotation(_Geometric):
    degrees: float = Field(15.0, gt=0.0, le=180.0)


class Zoom(_Geometric):
    factor: float = Field(0.1, gt=0.0, lt=1.0)


class Translation(_Geometric):
    height: float = Field(0.1, ge=0.0, le=1.0)
    width: float = Field(0.1, ge=0.0, le=1.0)


class RandomCrop(_Op):
    padding: int = Field(4, ge=1)
    padding_mode: Literal["constant", "reflect", "symmetric"] = "constant"
    fill_value: float = 0.0


class Brightness(_Op):
    factor: float = Field(0.2, gt=0.0, le=1.0)


class Contrast(_Op):
    factor: float = Field(0.2, gt=0.0, lt=1.0)


class Saturation(_Op):
    factor: float = Field(0.2, gt=0.0, lt=1.0)


class Hue(_Op):
    factor: float = Field(0.05, gt=0.0, le=0.5)


class ColorJitter(_Op):
    brightness: float = Field(0.2, ge=0.0, le=1.0)  # additive (Keras), so milder than 0.4
    contrast: float = Field(0.4, ge=0.0, lt=1.0)
    saturation: float = Field(0.4, ge=0.0, lt=1.0)
    hue: float = Field(0.1, ge=0.0, le=0.5)


class PCAColor(_Op):
    std: float = Field(0.1, gt=0.0)


class GaussianNoise(_Op):
    std: float = Field(0.05, gt=0.0)
    clip: bool = True


class SaltAndPepper(_Op):
    amount: float = Field(0.05, gt=0.0, le=1.0)
    salt_ratio: float = Field(0.5, ge=0.0, le=1.0)


def _check_range(
    name: str, pair: tuple[float, float], low: float, high: float | None, closed_low: bool
) -> None:
    """``pair`` is ``[min, max]`` with ``low <(=) min <= max (<= high)``."""
    lo, hi = pair
    ok_low = lo >= low if closed_low else lo > low
    if not (ok_low and lo <= hi and (high is None or hi <= high)):
        bound = f"{low} <{'=' if closed_low else ''} min <= max"
        raise ValueError(
            f"{name} must be [min, max] with {bound}{f' <= {high}' if high is not None else ''}, "
            f"got {list(pair)}"
        )


class Cutout(_Op):
    size: float | tuple[float, float] = 0.5
    num_holes: int = Field(1, ge=1)
    fill: float = 0.0

    @model_validator(mode="after")
    def _size(self) -> Cutout:
        if isinstance(self.size, tuple):
            _check_range("size", self.size, 0.0, 1.0, closed_low=True)
        elif not 0.0 < self.size <= 1.0:
            raise ValueError(f"size must be in (0, 1] or a range [min, max], got {self.size}")
        return self


class RandomResizedCrop(_Op):
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    attempts: int = Field(10, ge=1, le=100)
    interpolation: Interpolation = "bilinear"

    @model_validator(mode="after")
    def _ranges(self) -> RandomResizedCrop:
        _check_range("scale", self.scale, 0.0, 1.0, closed_low=False)
        _check_range("ratio", self.ratio, 0.0, None, closed_low=False)
        return self


class Grayscale(_Op):
    pass


class GaussianBlur(_Op):
    kernel: float = Field(0.1, gt=0.0, le=1.0)
    sigma: tuple[float, float] = (0.1, 2.0)

    @model_validator(mode="after")
    def _ranges(self) -> GaussianBlur:
        _check_range("sigma", self.sigma, 0.0, None, closed_low=False)
        return self


class RandomErasing(_Op):
    p: float = Field(0.5, ge=0.0, le=1.0)
    area: tuple[float, float] = (0.02, 0.4)
    ratio: tuple[float, float] = (0.3, 1.0 / 0.3)
    fill: Literal["random"] | float = "random"
    attempts: int = Field(10, ge=1, le=100)

    @model_validator(mode="after")
    def _ranges(self) -> RandomErasing:
        lo, hi = self.area
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"area must be [min, max] with 0 < min <= max <= 1, got {self.area}")
        lo, hi = self.ratio
        if not 0.0 < lo <= hi:
            raise ValueError(f"ratio must be [min, max] with 0 < min <= max, got {self.ratio}")
        return self


class MixUp(_Op):
    alpha: float = Field(0.2, gt=0.0)


class CutMix(_Op):
    alpha: float = Field(1.0, gt=0.0)


class MixUpOrCutMix(_Op):
    """Per batch, CutMix with probability ``switch_prob``, else MixUp (timm's ``Mixup`` in batch
    mode; torchvision's reference recipes: ``RandomChoice([MixUp(0.2), CutMix(1.0)])``)."""

    mixup_alpha: float = Field(0.2, gt=0.0)
    cutmix_alpha: float = Field(1.0, gt=0.0)
    switch_prob: float = Field(0.5, ge=0.0, le=1.0)


class AutoAugment(_Op):
    policy: Literal["imagenet", "cifar10"] = "imagenet"


class RandAugment(_Op):
    num_ops: int = Field(2, ge=1, le=10)
    magnitude: float = Field(9.0, ge=0.0, le=30.0)
    magnitude_sampling: Literal["fixed", "uniform"] = "fixed"


class RandAugmentTimm(_Op):
    """timm's RandAugment from its config string (augment_timm.py); DeiT's is the default."""

    config: str = "rand-m9-mstd0.5-inc1"
    fill: float | tuple[float, float, float] = 128 / 255  # timm's default grey; DeiT: the mean
    translate_pct: float = Field(0.45, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _config(self) -> RandAugmentTimm:
        from kerasdl.data.timm_config import parse_config

        parse_config(self.config)  # a UserError (a ValueError) names the bad section
        return self


class TrivialAugmentWide(_Op):
    """Müller & Hutter 2021 (torchvision's ``TrivialAugmentWide``); see augment_trivial.py."""

    num_magnitude_bins: int = Field(31, ge=2, le=1024)
    interpolation: Literal["nearest", "bilinear"] = "nearest"
    fill: float = Field(0.0, ge=0.0, le=1.0)


SPECS: dict[str, type[_Op]] = {
    "flip": Flip,
    "rotation": Rotation,
    "zoom": Zoom,
    "translation": Translation,
    "random_crop": RandomCrop,
    "random_resized_crop": RandomResizedCrop,
    "brightness": Brightness,
    "contrast": Contrast,
    "saturation": Saturation,
    "hue": Hue,
    "color_jitter": ColorJitter,
    "grayscale": Grayscale,
    "pca_color": PCAColor,
    "gaussian_noise": GaussianNoise,
    "salt_and_pepper": SaltAndPepper,
    "gaussian_blur": GaussianBlur,
    "cutout": Cutout,
    "random_erasing": RandomErasing,
    "mixup": MixUp,
    "cutmix": CutMix,
    "mixup_or_cutmix": MixUpOrCutMix,
    "autoaugment": AutoAugment,
    "randaugment": RandAugment,
    "rand_augment_timm": RandAugmentTimm,
    "trivial_augment_wide": TrivialAugmentWide,
}

# Operations that need training-set statistics (``stats``) to be built.
NEEDS_STATS: dict[str, tuple[str, ...]] = {"pca_color": ("pca_eigenvalues", "pca_eigenvectors")}

AUGMENT_NAMES: tuple[str, ...] = tuple(SPECS)


def _where(key: str, index: int, name: str | None = None) -> str:
    return f"{key}[{index}]" + (f" ({name})" if name else "")


def validate_augment(specs: list[dict], *, key: str = "data.augment") -> list[dict]:
    """Validate a recipe's augmentation list and fill in the defaults.

    Args:
        specs: entries ``{"name": "<op>", **params}`` (a bare string is taken as ``{"name": s}``).
        key: the recipe key named in error messages.

    Returns:
        The normalized specs: ``{"name": ..., **all params with defaults}``.

    Raises:
        UserError: naming the entry, the operation, the bad key or value and what was expected,
            e.g. ``data.augment[2] (cutout): Unknown key 'sise'. Expected one of: p, size, ...``.
    """
    if specs is None:
        return []
    if not isinstance(specs, list | tuple):
        raise UserError(f"{key}: expected a list of {{name: ..., params}}. Received: {specs!r}")
    out = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise UserError(
                f"{_where(key, i)}: expected a mapping with a 'name' key. Received: {spec!r}"
            )
        params = dict(spec)
        name = params.pop("name")
        if name not in SPECS:
            raise UserError(
                f"{_where(key, i)}: unknown augmentation {name!r}.{suggest(name, AUGMENT_NAMES)}"
            )
        model = SPECS[name]
        try:
            parsed = model(**params)
        except ValidationError as err:
            raise UserError(f"{_where(key, i, name)}: {one_line(err, model=model)}") from None
        out.append({"name": name, **parsed.model_dump(mode="json")})  # lists, not tuples
    return out


# Operations that mix an image with another and its label: not a view of one unlabelled image.
MIXES_LABELS: frozenset[str] = frozenset({"mixup", "cutmix", "mixup_or_cutmix"})

_WEAK: list[dict] = [
    {"name": "flip", "mode": "horizontal"},
    {"name": "translation", "height": 0.125, "width": 0.125, "fill_mode": "reflect"},
]

# The views of the semi- and self-supervised methods (``kerasdl.data.ssl``): augmentation lists
# with the papers' defaults. :func:`view_specs` applies a method's recipe keys to them.
VIEWS: dict[str, list[dict]] = {
    # Sohn et al. 2020 (FixMatch), section 2.3 and table 12: flip (p 1/2) and translation by up
    # to 12.5% of the side, reflect padding.
    "fixmatch_weak": _WEAK,
    # Sohn et al. 2020, section 2.3 and table 12: the weak view, RandAugment (2 operations per
    # image, each at a magnitude drawn uniformly per image: FixMatch's variant of RA), then
    # Cutout: a grey square of side U(0, 0.5) x the image side.
    "fixmatch_strong": [
        *_WEAK,
        {"name": "randaugment", "num_ops": 2, "magnitude": 10.0, "magnitude_sampling": "uniform"},
        {"name": "cutout", "size": [0.0, 0.5], "fill": 0.5},
    ],
    # Chen et al. 2020 (SimCLR), appendix A: random resized crop (scale 0.08-1, ratio 3/4-4/3),
    # flip, colour jitter of strength s = 0.5 (brightness, contrast, saturation 0.8 s, hue 0.2 s)
    # with p 0.8, grayscale with p 0.2, Gaussian blur (kernel 10% of the side, sigma 0.1-2) p 0.5.
    "simclr": [
        {"name": "random_resized_crop", "scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3]},
        {"name": "flip", "mode": "horizontal"},
        {
            "name": "color_jitter",
            "brightness": 0.4,
            "contrast": 0.4,
            "saturation": 0.4,
            "hue": 0.1,
            "p": 0.8,
        },
        {"name": "grayscale", "p": 0.2},
        {"name": "gaussian_blur", "kernel": 0.1, "sigma": [0.1, 2.0], "p": 0.5},
    ],
    # He et al. 2022 (MAE), section 4 and appendix A.1: random resized crop (scale 0.2-1) and
    # flip, no colour augmentation.
    "mae": [
        {"name": "random_resized_crop", "scale": [0.2, 1.0], "ratio": [3 / 4, 4 / 3]},
        {"name": "flip", "mode": "horizontal"},
    ],
}

VIEW_NAMES: tuple[str, ...] = tuple(VIEWS)


def color_jitter_strength(strength: float) -> dict[str, float]:
    """SimCLR's colour jitter of strength ``s`` as ``color_jitter`` keys: brightness, contrast and
    saturation ``0.8 s``, hue ``0.2 s`` (Chen et al. 2020, appendix A)."""
    s = float(strength)
    if not 0.0 <= s < 1.25:
        raise UserError(
            "jitter_strength must be in [0, 1.25) (brightness, contrast and saturation are "
            f"0.8 x strength and must stay below 1). Received: {strength!r}"
        )
    return {"brightness": 0.8 * s, "contrast": 0.8 * s, "saturation": 0.8 * s, "hue": 0.2 * s}


def validate_view(specs: list[dict], *, key: str = "view") -> list[dict]:
    """Validate an augmentation list used as a view of one image (:func:`validate_augment`,
    plus: no label-mixing operation, no operation that needs training-set statistics)."""
    out = validate_augment(specs, key=key)
    for i, spec in enumerate(out):
        name = spec["name"]
        if name in MIXES_LABELS or name in NEEDS_STATS:
            why = "mixes labels" if name in MIXES_LABELS else "needs training-set statistics"
            allowed = [n for n in AUGMENT_NAMES if n not in MIXES_LABELS and n not in NEEDS_STATS]
            raise UserError(
                f"{_where(key, i, name)}: {why}; a view transforms one image alone. "
                f"Expected one of: {', '.join(allowed)}"
            )
    return out


def view_specs(
    view: str | list[dict],
    *,
    flip: bool | None = None,
    crop_scale: tuple[float, float] | list[float] | None = None,
    jitter_strength: float | None = None,
    jitter_prob: float | None = None,
    grayscale_prob: float | None = None,
    blur_prob: float | None = None,
    key: str = "view",
) -> list[dict]:
    """The validated augmentation list of a view.

    Args:
        view: a name of :data:`VIEWS`, or an augmentation list (used as given: the keys below
            edit named views only).
        flip: ``False`` drops the flips (digits, text).
        crop_scale: the ``scale`` of the random resized crop.
        jitter_strength: SimCLR's colour jitter strength ``s`` (:func:`color_jitter_strength`;
            0 drops the colour jitter).
        jitter_prob, grayscale_prob, blur_prob: ``p`` of the colour jitter, grayscale and blur.
        key: the name used in error messages.

    Returns:
        The normalized specs, ready for ``kerasdl.data.augment.build_augment``.

    Example:
        >>> [s["name"] for s in view_specs("fixmatch_weak", flip=False)]
        ['translation']
    """
    if not isinstance(view, str):
        return validate_view(view, key=key)
    if view not in VIEWS:
        raise UserError(f"{key}: unknown view {view!r}.{suggest(view, VIEWS)}")
    edits: dict[str, dict] = {
        "random_resized_crop": {} if crop_scale is None else {"scale": list(crop_scale)},
        "color_jitter": {} if jitter_strength is None else color_jitter_strength(jitter_strength),
        "grayscale": {},
        "gaussian_blur": {},
    }
    for name, prob in (
        ("color_jitter", jitter_prob),
        ("grayscale", grayscale_prob),
        ("gaussian_blur", blur_prob),
    ):
        if prob is not None:
            edits[name]["p"] = prob
    out = []
    for spec in VIEWS[view]:
        name = spec["name"]
        if name == "flip" and flip is False:
            continue
        if name == "color_jitter" and jitter_strength is not None and not jitter_strength:
            continue
        out.append({**spec, **edits.get(name, {})})
    return validate_view(out, key=f"{key} {view}")
