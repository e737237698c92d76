"""timm's RandAugment configuration strings (``rand-m9-mstd0.5-inc1``), read without TensorFlow
so that recipes validate before anything heavy is imported (see augment_timm.py)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from kerasdl.errors import UserError

LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitudes are on a 0-10 scale


@dataclass(frozen=True)
class RandAugmentConfig:
    """A parsed timm ``rand-...`` string (``m``, ``n``, ``p``, ``mstd``, ``mmax``, ``inc``)."""

    magnitude: float = 10.0
    num_ops: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_DENOM
    increasing: bool = False


def parse_config(text: str) -> RandAugmentConfig:
    """Parse timm's RandAugment string, e.g. ``rand-m9-mstd0.5-inc1`` (timm's defaults for the
    rest: m 10, n 2, p 0.5, mstd 0, mmax 10, inc 0)."""
    parts = text.split("-")
    if parts[0] != "rand":
        raise UserError(f"timm RandAugment config must start with 'rand'. Received: {text!r}")
    values: dict[str, float | int | bool] = {}
    keys = {"m": "magnitude", "n": "num_ops", "p": "prob", "mstd": "magnitude_std"}
    for part in parts[1:]:
        match = re.fullmatch(r"([a-z]+)(\d.*)", part)
        if match is None or match.group(1) not in (*keys, "mmax", "inc"):
            raise UserError(
                f"timm RandAugment config {text!r}: cannot read {part!r}. Expected sections "
                "m<magnitude>, n<ops>, p<prob>, mstd<std>, mmax<max>, inc<0|1> (transform-set "
                "'t' sections are not supported)."
            )
        key, raw = match.groups()
        try:
            number = float(raw)
        except ValueError:
            raise UserError(f"timm RandAugment config {text!r}: {part!r} is not a number") from None
        if key == "inc":
            values["increasing"] = bool(int(number))
        elif key == "mmax":
            values["magnitude_max"] = float(int(number))
        elif key == "mstd":
            values["magnitude_std"] = math.inf if number > 100 else number
        elif key == "n":
            values["num_ops"] = int(number)
        elif key == "m":
            values["magnitude"] = float(int(number))
        else:
            values[keys[key]] = number
    return RandAugmentConfig(**values)  # type: ignore[arg-type]
