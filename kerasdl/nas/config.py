"""The search recipe: ``search:``, ``data:`` and ``run:`` sections, validated with pydantic.

``data:`` and ``run:`` are the training recipe's sections (:mod:`kerasdl.config`); ``search:`` holds
the DARTS search space and the bilevel optimizer, with the paper's CIFAR-10 values as defaults::

    search:
      layers: 8              # cells in the search network (reductions at 1/3 and 2/3)
      init_channels: 16
      nodes: 4               # intermediate nodes per cell
      unrolled: false        # true: second-order approximation (eq. 7-8)
      epochs: 50
      batch_size: 64
      train_portion: 0.5     # share of the training split that trains the weights; the rest alphas
      learning_rate: 0.025   # SGD, momentum 0.9, cosine to learning_rate_min
      learning_rate_min: 0.001
      momentum: 0.9
      weight_decay: 3.0e-4
      grad_clip: 5.0
      arch_learning_rate: 3.0e-4   # Adam, betas (0.5, 0.999)
      arch_beta_1: 0.5
      arch_beta_2: 0.999
      arch_weight_decay: 1.0e-3
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from kerasdl.config import DataConfig, RunConfig, Section, apply_override, one_line, read_yaml
from kerasdl.errors import UserError
from kerasdl.io import write_yaml

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class SearchConfig(Section):
    """``search:``: DARTS search space and optimizer (defaults: Liu et al. 2019, CIFAR-10)."""

    layers: Annotated[int, Field(ge=1)] = 8
    init_channels: Annotated[int, Field(ge=2, multiple_of=2)] = 16
    nodes: Annotated[int, Field(ge=1, le=8)] = 4
    multiplier: Annotated[int, Field(ge=1)] | None = None
    stem_multiplier: PositiveInt = 3
    unrolled: bool = False
    epochs: PositiveInt = 50
    batch_size: PositiveInt = 64
    train_portion: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    learning_rate: PositiveFloat = 0.025
    learning_rate_min: Annotated[float, Field(ge=0.0)] = 0.001
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 3e-4
    grad_clip: PositiveFloat = 5.0
    arch_learning_rate: PositiveFloat = 3e-4
    arch_beta_1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    arch_beta_2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.999
    arch_weight_decay: Annotated[float, Field(ge=0.0)] = 1e-3
    jit_compile: bool = False

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if self.multiplier is not None and self.multiplier > self.nodes:
            raise ValueError(f"search.multiplier must be at most search.nodes ({self.nodes})")
        if self.learning_rate_min > self.learning_rate:
            raise ValueError("search.learning_rate_min must not exceed search.learning_rate")
        return self

    @property
    def concat(self) -> int:
        """Nodes concatenated into a cell's output (all of them unless ``multiplier`` is set)."""
        return self.multiplier or self.nodes


class SearchRecipe(Section):
    """A whole search recipe."""

    search: SearchConfig = SearchConfig()
    data: DataConfig = DataConfig()
    run: RunConfig = RunConfig(name="darts_search")

    def dump_yaml(self, path: str | Path) -> None:
        """Write the resolved recipe (``kerasdl search path`` repeats the search)."""
        write_yaml(path, self.model_dump(mode="json"))


def load_search_recipe(path: str | Path, overrides: list[str] | None = None) -> SearchRecipe:
    """Read, override (``["search.epochs=2"]``) and validate a search recipe.

    Raises:
        kerasdl.UserError: missing file, bad YAML, unknown key or bad value (one line).
    """
    data: dict[str, Any] = read_yaml(path)
    for assignment in overrides or []:
        apply_override(data, assignment)
    try:
        return SearchRecipe.model_validate(data)
    except ValidationError as err:
        raise UserError(one_line(err, model=SearchRecipe)) from None
