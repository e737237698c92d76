"""Recipe keys of every augmentation in ``data.augment``: one pydantic model per operation.

A spec is ``{"name": "<op>", **params}``; unknown keys, wrong types and impossible values are
rejected by :func:`validate_augment` with one line naming the entry, the key
and what was expected. Every operation also takes ``p``: the probability that an image goes
through it (default 1; 0.5 for ``random_erasing`` as in its paper).
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kerasdl.errors import UserError

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


class Cutout(_Op):
    size: float = Field(0.5, gt=0.0, le=1.0)
    num_holes: int = Field(1, ge=1)
    fill: float = 0.0


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


class AutoAugment(_Op):
    policy: Literal["imagenet", "cifar10"] = "imagenet"


class RandAugment(_Op):
    num_ops: int = Field(2, ge=1, le=10)
    magnitude: float = Field(9.0, ge=0.0, le=30.0)


SPECS: dict[str, type[_Op]] = {
    "flip": Flip,
    "rotation": Rotation,
    "zoom": Zoom,
    "translation": Translation,
    "random_crop": RandomCrop,
    "brightness": Brightness,
    "contrast": Contrast,
    "saturation": Saturation,
    "hue": Hue,
    "color_jitter": ColorJitter,
    "pca_color": PCAColor,
    "gaussian_noise": GaussianNoise,
    "salt_and_pepper": SaltAndPepper,
    "cutout": Cutout,
    "random_erasing": RandomErasing,
    "mixup": MixUp,
    "cutmix": CutMix,
    "autoaugment": AutoAugment,
    "randaugment": RandAugment,
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
            e.g. ``data.augment[2] (cutout): unknown key 'sise'. Expected: p, size, ...``.
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
            close = difflib.get_close_matches(str(name), AUGMENT_NAMES, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(
                f"{_where(key, i)}: unknown augmentation {name!r}.{hint} "
                f"Expected one of: {', '.join(AUGMENT_NAMES)}"
            )
        model = SPECS[name]
        try:
            parsed = model(**params)
        except ValidationError as err:
            raise UserError(f"{_where(key, i, name)}: {_describe(err, model)}") from None
        out.append({"name": name, **parsed.model_dump(mode="json")})  # lists, not tuples
    return out


def _describe(err: ValidationError, model: type) -> str:
    fields = ", ".join(model.model_fields)
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'. Expected: {fields}")
        elif loc:
            parts.append(f"{loc}: {e['msg']}. Received: {e.get('input')!r}")
        else:
            parts.append(e["msg"].removeprefix("Value error, "))
    return "; ".join(parts)
