"""Model registry: variants are data, looked up by name (after timm's ``register_model``).

A family module holds one model class and one table of variants, ``registry name -> constructor
defaults``, and registers the table with the family's metadata (keras-applications' argument
tables, timm's ``@register_model``)::

    VARIANTS = {
        "resnet18": dict(block="basic", depths=[2, 2, 2, 2]),
        "resnet50": dict(block="bottleneck", depths=[3, 4, 6, 3]),
    }
    register_variants(ResNet, VARIANTS, family="resnet", paper="He et al. 2016", year=2016)

and users build models by name::

    model = kerasdl.create_model("resnet18", num_classes=10, input_shape=(32, 32, 3))

``create_model`` merges the variant's defaults with the caller's keyword arguments and calls the
model class; the registry never contains ``if name == ...`` chains. A keyword the model does not
take is an :class:`~kerasdl.errors.UnknownArgumentError` (a ``TypeError`` and a ``UserError``)
raised before anything is built; so is ``pretrained=True``: kerasdl downloads nothing, and
checkpoints come in through ``create_model(name, weights=PATH)`` (see :func:`check_model_kwargs`).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kerasdl.errors import UnknownArgumentError, UserError, suggest


@dataclass(frozen=True)
class ModelEntry:
    """One registered variant: the class (or builder), its default arguments and its metadata."""

    name: str
    builder: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    paper: str = ""
    year: int | None = None
    default_input: tuple[int, int, int] = (224, 224, 3)
    min_input: int = 32  # smallest square input side the architecture accepts (for smoke tests)


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register_model(
    name: str,
    builder: Callable[..., Any],
    defaults: dict[str, Any] | None = None,
    *,
    family: str = "",
    paper: str = "",
    year: int | None = None,
    default_input: tuple[int, int, int] = (224, 224, 3),
    min_input: int = 32,
) -> None:
    """Register a model variant under ``name``.

    Args:
        name: registry name, lower case (``"resnet50"``).
        builder: a ``keras.Model`` subclass (or a function returning one).
        defaults: constructor arguments that define the variant; callers may override them.
        family: family name shown by ``kerasdl models``.
        paper: short citation ("He et al. 2016").
        year: publication year.
        default_input: the input shape the reference uses, ``(H, W, C)``.
        min_input: the smallest square input side the model accepts (used by smoke tests).
    """
    if name in _REGISTRY and _REGISTRY[name].builder is not builder:
        raise ValueError(f"Model name {name!r} is already registered by another builder.")
    _REGISTRY[name] = ModelEntry(
        name, builder, dict(defaults or {}), family, paper, year, tuple(default_input), min_input
    )


def register_variants(
    builder: Callable[..., Any],
    variants: Mapping[str, Mapping[str, Any]],
    *,
    family: str,
    paper: str = "",
    year: int | None = None,
    default_input: tuple[int, int, int] = (224, 224, 3),
    min_input: int = 32,
    meta: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Register a family's variant table: one :func:`register_model` per row.

    Args:
        builder: the family's model class.
        variants: ``{registry name: constructor defaults}``, in display order.
        family, paper, year, min_input: the family's metadata (see :func:`register_model`).
        default_input: the reference input shape of rows that do not set ``input_shape``
            (a row that does is its own default input).
        meta: ``{registry name: metadata}`` for the rows whose ``paper``, ``year``,
            ``default_input`` or ``min_input`` differ from the family's.

    Example:
        >>> register_variants(ResNet, {"resnet18": dict(block="basic", depths=[2, 2, 2, 2])},
        ...                   family="resnet", paper="He et al. 2016", year=2016)
    """
    meta = meta or {}
    unknown = sorted(set(meta) - set(variants))
    if unknown:
        raise ValueError(f"meta names rows that are not variants: {', '.join(unknown)}")
    for name, defaults in variants.items():
        card = {
            "family": family,
            "paper": paper,
            "year": year,
            "default_input": tuple(defaults.get("input_shape", default_input)),
            "min_input": min_input,
            **meta.get(name, {}),
        }
        register_model(name, builder, dict(defaults), **card)


def ensure_registered() -> None:
    """Register every variant: import the model zoo, :mod:`kerasdl.models`, whose ``__init__``
    imports each family module (this module imports no model, so that ``kerasdl.config`` can
    read it without Keras)."""
    global _loaded
    if not _loaded:
        import kerasdl.models  # noqa: F401

        _loaded = True


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registry names matching a shell-style ``pattern`` (``"vit_*"``)."""
    ensure_registered()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; a :class:`UserError` naming the accepted names otherwise."""
    ensure_registered()
    if name not in _REGISTRY:
        raise UserError(f"Unknown model {name!r}. Expected one of: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


# Keyword arguments of keras.Model that every kerasdl model forwards (Functional drops the rest).
KERAS_MODEL_KWARGS = ("name", "dtype", "trainable")
# timm / keras.applications spellings of "random initialisation": accepted and dropped.
_NO_WEIGHTS = {"pretrained": (False,), "weights": (None,)}


def model_arguments(builder: Callable[..., Any]) -> list[str]:
    """The keyword arguments ``builder`` (a model class or function) accepts, in signature order.

    Its named parameters, plus Keras's ``name``, ``dtype`` and ``trainable`` when it takes
    ``**kwargs`` (which kerasdl models pass on to ``keras.Model``).
    """
    target = builder.__init__ if inspect.isclass(builder) else builder
    params = inspect.signature(target).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [n for n, p in params.items() if n != "self" and p.kind in named]
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names += [k for k in KERAS_MODEL_KWARGS if k not in names]
    return names


def check_model_kwargs(
    builder: Callable[..., Any], kwargs: dict[str, Any], label: str | None = None
) -> dict[str, Any]:
    """``kwargs`` if ``builder`` accepts them all; otherwise one clear error, before any work.

    ``pretrained=False`` and ``weights=None`` (random initialisation, as timm and
    keras.applications spell it) are dropped unless ``builder`` takes them itself.

    Args:
        builder: the model class (or function) about to be called.
        kwargs: its keyword arguments.
        label: how the message names the call (default ``"ClassName()"``).

    Returns:
        The keyword arguments to pass on.

    Raises:
        UnknownArgumentError: a keyword ``builder`` does not take (naming it, the closest accepted
            one and all of them), or a request for pretrained weights (none ship with kerasdl).
    """
    accepted = model_arguments(builder)
    label = label or f"{getattr(builder, '__name__', 'model')}()"
    out = {}
    for key, value in kwargs.items():
        if key in accepted:
            out[key] = value
        elif key in _NO_WEIGHTS and any(value is v for v in _NO_WEIGHTS[key]):
            continue
        elif key in _NO_WEIGHTS:
            raise UnknownArgumentError(
                f"{label}: {key}={value!r}: kerasdl downloads no weights; models start from "
                "random initialisation. To start from a torchvision or timm checkpoint you have, "
                "pass its file: create_model(name, weights=PATH) (.safetensors or .pth), or in a "
                "recipe model.weights: PATH; Keras weights load with model.load_weights(PATH)."
            )
        else:
            raise UnknownArgumentError(
                f"{label}: unknown keyword argument {key!r}.{suggest(key, accepted)}"
            )
    return out


def create_model(
    name: str,
    /,
    *,
    weights: str | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> Any:
    """Build the registered model ``name``; ``kwargs`` override the variant's defaults.

    ``name`` is positional, so that Keras's ``name=`` keyword names the model.

    Args:
        name: a registered model name (``list_models()``).
        weights: a checkpoint file to start from: a torchvision or timm ``state_dict`` as
            ``.safetensors`` or ``.pth``/``.pt`` (converted on the fly, see
            :mod:`kerasdl.weights`), or Keras weights (``.weights.h5``). A different
            ``num_classes`` keeps the backbone and re-initialises the classifier.
        features_only: return a model whose outputs are the feature maps at the end of each
            stage (timm's convention), with ``model.feature_info``; see
            :mod:`kerasdl.models.features`.
        out_indices: with ``features_only``, which stages to return: indices (negative ones
            count from the end) or an int n for the last n (default: the family's own).
        **kwargs: the model's constructor arguments.

    Raises:
        UserError: an unknown model name, or weights that do not fit the model.
        UnknownArgumentError: a keyword the model does not take, or ``pretrained=True``
            (kerasdl downloads nothing); checked before building.

    Example:
        >>> model = create_model("resnet18", num_classes=10, input_shape=(32, 32, 3))
    """
    entry = get_entry(name)
    kwargs = check_model_kwargs(entry.builder, kwargs, f"create_model({name!r})")
    if out_indices is not None and not features_only:
        raise UserError(f"create_model({name!r}): out_indices needs features_only=True.")
    args = {**entry.defaults, **kwargs}
    if weights is not None:
        from kerasdl.weights import build_with_weights

        model = build_with_weights(name, entry.builder, args, weights)
    else:
        model = _build(name, entry.builder, args)
    if features_only:
        from kerasdl.models.features import features_model

        model = features_model(model, out_indices=out_indices)
    return model


def _build(name: str, builder: Callable[..., Any], args: dict[str, Any]) -> Any:
    try:
        return builder(**args)
    except UserError:
        raise
    except TypeError as err:  # a wrong argument name is the caller's mistake; other bugs propagate
        if "argument" not in str(err):
            raise
        raise UserError(f"Model {name!r}: {err}") from err


# The registry manifest: every registered name and the keyword arguments its builder accepts
# (:func:`model_arguments`), as package data, so that a recipe's ``model:`` section is checked
# without importing Keras (kerasdl.config). After adding or changing a model, refresh it with
# ``python -m kerasdl.registry`` (a test fails while it is out of date).
MANIFEST_NAME = "registry_manifest.json"


def model_manifest() -> dict[str, Any]:
    """``{"version": 2, "models": {name: {"builder": "module.Class", "args": [...]}}}`` for every
    registered model (imports every family module)."""
    ensure_registered()
    models = {
        name: {
            "builder": f"{e.builder.__module__}.{e.builder.__qualname__}",
            "args": model_arguments(e.builder),
        }
        for name, e in sorted(_REGISTRY.items())
    }
    return {"version": 2, "models": models}


def write_manifest(path: str | None = None) -> str:
    """Write :func:`model_manifest` next to this module (or to ``path``); returns the path."""
    import json
    import os
    import tempfile

    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), MANIFEST_NAME)
    text = json.dumps(model_manifest(), indent=1, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


if __name__ == "__main__":  # python -m kerasdl.registry: the package's module (where models
    from kerasdl.registry import write_manifest as _write  # register), not this __main__ copy

    print(f"wrote {_write()}")
