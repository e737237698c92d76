"""Search spaces: a YAML file mapping dotted recipe keys to distributions (no TensorFlow, no
Optuna at import).

::

    training.optimizer.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    training.batch_size: {type: categorical, choices: [32, 64]}
    model.dropout: {type: float, low: 0.0, high: 0.5}
    model.filters: {type: categorical, choices: [[16, 32], [32, 64]]}
    training.epochs: {type: int, low: 2, high: 8, step: 2}

The distributions are Optuna's (``suggest_float``, ``suggest_int``, ``suggest_categorical``);
categorical choices that are not scalars (lists, mappings) are handed to Optuna as their JSON text
and turned back into values for the recipe. :func:`check_space` puts every value a distribution
can take at its ends (``low``, ``high``, every choice) into the recipe and validates it, so a key
that does not exist, a type the recipe does not take or a value out of its range stops the tuner
before the first trial, in one line naming the key.

Reference: Akiba et al. 2019, "Optuna: A Next-generation Hyperparameter Optimization
Framework" (define-by-run search spaces).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kerasdl.config import apply_override, one_line, read_yaml, validate_recipe
from kerasdl.errors import UserError

# Keys the tuner sets for every trial (where its run folder goes) or optimises (the monitor).
RESERVED = ("run.name", "run.output_dir", "run.id", "training.monitor")


class _Dist(BaseModel):
    """Unknown keys are errors, types strict (an int is a float, a string is no number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class FloatDist(_Dist):
    """A float in ``[low, high]``, log-uniform with ``log``, on a grid with ``step``."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatDist:
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def ends(self) -> list[Any]:
        return [self.low, self.high]


class IntDist(_Dist):
    """An integer in ``[low, high]`` (every ``step``-th), log-uniform with ``log``."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: Annotated[int, Field(gt=0)] = 1

    @model_validator(mode="after")
    def _check(self) -> IntDist:
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self

    def ends(self) -> list[Any]:
        return [self.low, self.high]


class CategoricalDist(_Dist):
    """One of ``choices`` (any YAML values, at least one, no two alike)."""

    type: Literal["categorical"]
    choices: Annotated[list[Any], Field(min_length=1)]

    @model_validator(mode="after")
    def _check(self) -> CategoricalDist:
        labels = [_label(c) for c in self.choices]
        if len(set(labels)) != len(labels):
            raise ValueError(f"choices must differ from each other. Received: {self.choices}")
        return self

    def ends(self) -> list[Any]:
        return list(self.choices)

    def labels(self) -> list[Any]:
        """The choices as Optuna takes them: scalars as they are, others as JSON text."""
        return [_label(c) for c in self.choices]


DISTRIBUTIONS: dict[str, type[_Dist]] = {
    "float": FloatDist,
    "int": IntDist,
    "categorical": CategoricalDist,
}


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low must not exceed high. Received: low {low}, high {high}")
    if log and low <= 0:
        raise ValueError(f"low must be above 0 with log: true. Received: {low}")
    if log and step is not None:
        raise ValueError("log: true and step exclude each other (Optuna)")


def _label(choice: Any) -> Any:
    """A choice as Optuna stores it (scalars as they are; others as their JSON text)."""
    if choice is None or isinstance(choice, bool | int | float | str):
        return choice
    return json.dumps(choice, sort_keys=True)


def load_space(path: str | Path) -> dict[str, Any]:
    """Read and check a space file: ``{dotted key: distribution}`` (UserError on a problem)."""
    raw = read_yaml(path)
    if not raw:
        raise UserError(f"--space {path}: no keys to search (expected key: {{type: ...}} lines)")
    space: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if key in RESERVED or key == "run":
            raise UserError(
                f"--space {path}: {key} is set by kerasdl tune for every trial; it cannot be "
                f"searched (reserved: {', '.join(RESERVED)})"
            )
        if not isinstance(value, dict):
            raise UserError(
                f"--space {path}: {key}: expected a distribution such as {{type: float, low: 0, "
                f"high: 1}}. Received: {value!r}"
            )
        cls = DISTRIBUTIONS.get(value.get("type"))
        if cls is None:
            raise UserError(
                f"--space {path}: {key}.type: expected one of: {', '.join(DISTRIBUTIONS)}. "
                f"Received: {value.get('type')!r}"
            )
        try:
            space[key] = cls.model_validate(value)
        except ValidationError as err:
            raise UserError(f"--space {path}: {one_line(err, key, model=cls)}") from None
    return space


def with_params(recipe: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw recipe with ``params`` (``{dotted key: value}``) set."""
    data = copy.deepcopy(recipe)
    for key, value in params.items():
        # PyYAML's own spelling, which it reads back exactly (its reader takes JSON's 1e-08 for
        # a string: YAML 1.1 floats need a dot)
        text = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
        apply_override(data, f"{key}={text}")
    return data


def check_space(space: dict[str, Any], recipe: dict[str, Any], where: str = "--space") -> None:
    """Validate the recipe with every end value of every distribution, one key at a time.

    Raises:
        UserError: ``<where>: <key> = <value>: <what the recipe schema says>``.
    """
    for key, dist in space.items():
        for value in dist.ends():
            try:
                validate_recipe(with_params(recipe, {key: value}))
            except UserError as err:
                raise UserError(
                    f"{where}: {key} = {value!r} is not a valid recipe value: {err}"
                ) from None


def to_optuna(dist: Any) -> Any:
    """The Optuna distribution of a space entry."""
    from optuna import distributions as od

    if isinstance(dist, FloatDist):
        return od.FloatDistribution(dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDist):
        return od.IntDistribution(dist.low, dist.high, log=dist.log, step=dist.step)
    return od.CategoricalDistribution(dist.labels())


def check_against_study(space: dict[str, Any], trials: list[Any], where: str = "--space") -> None:
    """Optuna takes one kind of distribution per key in a study (the same type and ``log``; the
    same choices): check the space against the trials the study already has.

    Raises:
        UserError: naming the key, its distribution in the study and in the space.
    """
    from optuna.distributions import check_distribution_compatibility

    for key, dist in space.items():
        new = to_optuna(dist)
        for trial in trials:
            old = trial.distributions.get(key)
            if old is None:
                continue
            try:
                check_distribution_compatibility(old, new)
            except ValueError as err:
                raise UserError(
                    f"{where}: {key}: {err} The study's trial {trial.number} used {old}; "
                    f"the space gives {new}. Use another --study, or the study's distribution"
                ) from None


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Ask an Optuna trial for one value of each key; returns ``{dotted key: recipe value}``."""
    params: dict[str, Any] = {}
    for key, dist in space.items():
        if isinstance(dist, FloatDist):
            value = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
            # a grid point as written (0.3, not Optuna's low + 3 * step = 0.30000000000000004)
            params[key] = float(f"{value:.12g}") if dist.step else value
        elif isinstance(dist, IntDist):
            params[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            label = trial.suggest_categorical(key, dist.labels())
            params[key] = dist.choices[dist.labels().index(label)]
    return params
