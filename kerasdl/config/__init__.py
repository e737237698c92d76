"""Recipes: YAML -> validated config objects, dotted ``--set`` overrides, resolved config dump.

A recipe is a YAML file of sections (``model:``, ``data:``, ``training:``, ``run:``, and optionally
``distribute:`` and ``method:``); :func:`load_recipe` reads one, applies ``--set key.sub=value``
overrides and validates it into a :class:`RecipeConfig`, and ``RecipeConfig.dump_yaml`` writes the
resolved recipe that ``kerasdl train`` accepts back to repeat a run. Nothing here imports
TensorFlow or Keras: a bad recipe fails in a second, with one line naming the key, what was
expected and what was received.

Modules:
    schema: the pydantic models of the sections (:class:`RecipeConfig` and its parts).
    load: YAML files, overrides and validation (:func:`load_recipe`, :func:`load_run_recipe`,
        :func:`read_yaml`, :func:`apply_override`, :func:`validate_recipe`).
    errors: :func:`one_line`, the one formatter of pydantic validation errors (every recipe
        section of the project reports through it).
    manifest: the constructor arguments of registry models, without importing Keras.
    names: the rule for names that become a folder (``run.name``, ``run.id``, export names).
"""

from __future__ import annotations

from kerasdl.config.errors import one_line
from kerasdl.config.load import (
    CONFIGS_DIR,
    PACKAGE_ROOT,
    QUICKSTART,
    apply_override,
    load_recipe,
    load_run_recipe,
    read_yaml,
    validate_recipe,
)
from kerasdl.config.manifest import accepted_arguments
from kerasdl.config.schema import (
    AUTO_STEPS_PER_EXECUTION,
    DataConfig,
    DistributeConfig,
    Fraction,
    InitConfig,
    LossConfig,
    LrScalingConfig,
    ModelConfig,
    OptimizerConfig,
    PositiveInt,
    RecipeConfig,
    RunConfig,
    ScheduleConfig,
    Section,
    SyntheticConfig,
    TrainingConfig,
    TransferConfig,
)

_model_arguments = accepted_arguments  # its former name (tests/test_cli_startup.py)

__all__ = [
    "AUTO_STEPS_PER_EXECUTION",
    "CONFIGS_DIR",
    "PACKAGE_ROOT",
    "QUICKSTART",
    "DataConfig",
    "DistributeConfig",
    "Fraction",
    "InitConfig",
    "LossConfig",
    "LrScalingConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PositiveInt",
    "RecipeConfig",
    "RunConfig",
    "ScheduleConfig",
    "Section",
    "SyntheticConfig",
    "TrainingConfig",
    "TransferConfig",
    "accepted_arguments",
    "apply_override",
    "load_recipe",
    "load_run_recipe",
    "one_line",
    "read_yaml",
    "validate_recipe",
]
