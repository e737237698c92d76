"""The one formatter of validation errors: a pydantic ``ValidationError`` as one line.

Every recipe section (the training recipe, the search recipe, ``method:``, ``data.augment``) is
validated by a pydantic model; :func:`one_line` turns what pydantic raises into the line a user
reads, naming the key (``training.epochs``, ``data.augment[2].size``), what was expected and what
was received::

    Unknown key 'training.epochz'. Expected one of: epochs, batch_size, ...
    Unknown key 'method.tau' for method 'fixmatch'. Expected one of: seed, labels_per_class, ...
    training.epochs: Input should be greater than 0. Received: 0
    data.image_size: Input should be a valid list or greater than 0. Received: -1
    data.source 'tfds' needs data.name (a tensorflow-datasets name).

:func:`check_finite` says the same of an infinite or NaN number in a free-form value (model
arguments, ``method:``), as pydantic's ``allow_inf_nan=False`` says it of the typed fields.
"""

from __future__ import annotations

import math
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

# Parts of an error's location that name a member of a union type, not a key: pydantic spells
# them like types ("list[constrained-int]", "literal['auto']", "function-after[...]"), and plain
# scalar members by their type's name.
_TYPE_TAGS = frozenset({"int", "float", "str", "bool", "bytes", "none"})


def one_line(
    err: ValidationError,
    where: str = "",
    *,
    model: type[BaseModel] | None = None,
    owner: str = "",
) -> str:
    """The first problem in ``err`` as one line: the key, what was expected, what was received.

    Args:
        err: what pydantic raised.
        where: the recipe key of the validated data (``"method"``, ``"data.augment[2]"``); the
            keys a message names are under it. Empty for a whole recipe.
        model: the model that was validated; a message about an unknown key then lists the keys
            of the section it was found in.
        owner: what the keys belong to, named in a message about an unknown key
            (``"method 'fixmatch'"``).

    Returns:
        ``Unknown key '<key>'[ for <owner>]. Expected one of: <keys>.`` for an unknown key;
        the validator's own message for a ``ValueError`` raised by a validator (prefixed with
        the key when it does not name it); else ``<key>: <what was expected>. Received: <value>``
        (no ``Received`` for a missing key or a mapping). When the value failed every member of a
        union type, the expectations of all of them are named.

    Example:
        >>> from kerasdl.config import RecipeConfig
        >>> try:
        ...     RecipeConfig.model_validate({"training": {"epochs": 0}})
        ... except ValidationError as err:
        ...     print(one_line(err, model=RecipeConfig))
        training.epochs: Input should be greater than 0. Received: 0
    """
    errors = err.errors()
    first = errors[0]
    loc = _keys(first["loc"])
    key = _join(where, loc)
    if first["type"] == "extra_forbidden":
        section = _section(model, loc[:-1])
        expected = f" Expected one of: {', '.join(section.model_fields)}." if section else ""
        return f"Unknown key '{key}'{f' for {owner}' if owner else ''}.{expected}"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":  # a validator's message, which usually names its key
        if key and key not in msg:
            msg = f"{key}: {msg}"
        return msg if msg.endswith(".") else f"{msg}."
    if len(loc) < len(first["loc"]):  # the value failed a union: say what each member expects
        msg = _any_of([e["msg"] for e in errors if _keys(e["loc"]) == loc])
    received = first.get("input")
    if first["type"] == "missing" or isinstance(received, dict):
        return f"{key}: {msg}." if key else f"{msg}."
    return f"{key}: {msg}. Received: {received!r}" if key else f"{msg}. Received: {received!r}"


def _keys(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The keys and list indices of an error's location (union-member tags dropped)."""
    return tuple(p for p in loc if isinstance(p, int) or (p.isidentifier() and p not in _TYPE_TAGS))


def _join(where: str, loc: tuple[int | str, ...]) -> str:
    """``where`` and ``loc`` as one key: ``training.schedule.step_epochs[1]``."""
    key = where
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _any_of(messages: list[str]) -> str:
    """``Input should be a valid list or greater than 0`` from the messages of a union's members."""
    out: list[str] = []
    for msg in messages:
        if out and msg.startswith("Input should be ") and out[0].startswith("Input should be "):
            msg = msg.removeprefix("Input should be ")
        if msg not in out:
            out.append(msg)
    return " or ".join(out)


def _section(model: Any, loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class of the section at ``loc`` under ``model`` (``None`` if it is not one)."""
    cls = _model_in(model)
    for part in loc:
        if cls is None:
            return None
        if isinstance(part, int):
            return None  # a list of sections: none in the recipe schema
        field = cls.model_fields.get(part)
        cls = _model_in(field.annotation) if field is not None else None
    return cls


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class an annotation is (``Section``) or may be (``Section | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        models = [m for a in get_args(annotation) if (m := _model_in(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def _non_finite(value: Any, key: str) -> tuple[str, float] | None:
    """The first infinite or NaN number in ``value`` (a recipe value: a number, a list or a
    mapping, searched in order) and its key spelled under ``key``; ``None`` if all are finite."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (key, value)
    if isinstance(value, dict):
        items = ((f"{key}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, v in items:
        found = _non_finite(v, sub)
        if found is not None:
            return found
    return None


def check_finite(value: Any, key: str) -> None:
    """Raise a ``ValueError`` naming the first infinite or NaN number in ``value`` (in pydantic's
    words, as ``allow_inf_nan=False`` says it of the typed fields)."""
    found = _non_finite(value, key)
    if found is not None:
        raise ValueError(f"{found[0]}: Input should be a finite number. Received: {found[1]!r}")
