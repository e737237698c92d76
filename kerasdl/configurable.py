"""Constructor arguments as configuration: the one mechanism behind kerasdl's models and layers.

A Keras object is serialised by ``get_config`` and rebuilt by ``cls(**config)``, so its config is
its constructor call. :class:`Configurable` makes that literal: its ``__init_subclass__`` wraps
each subclass's ``__init__`` (binding the call to the constructor's ``inspect.signature``) so that

* before the constructor body runs, every named argument (defaults included) is an attribute of
  the same name (:func:`attribute_name`: ``input_shape_`` / ``layers_`` where the Keras class
  already has the name); the constructor may replace it with a normalised form
  (``self.rate = check_rate(rate)``). (Models get theirs after the body, see
  ``_arguments_before_init``.)
* at the end of the constructor those attributes are recorded, and ``get_config`` returns them
  (tuples as lists, Keras objects such as initializers through
  ``keras.saving.serialize_keras_object``).

So a block writes neither ``self.x = x`` nor ``get_config``. :class:`ConfigurableLayer` is the
base of kerasdl's layers; the mixin goes in front of a Keras layer class for the layers that
extend one (``class DropConnectDense(Configurable, keras.layers.Dense)``), and
:class:`~kerasdl.models.base.Classifier` uses it with its own keyword check and config.

This is Keras's own auto-config (``Operation.__new__`` records the raw arguments of layers that
write no ``get_config``) made explicit: the recorded values are the normalised attributes, a
subclass adds its arguments to its parent's, and Keras objects among them are serialised.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar

import keras

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, at any depth (YAML- and JSON-friendly)."""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def config_value(value: Any) -> Any:
    """``value`` as it goes into a config: :func:`plain`, with Keras objects (anything with a
    ``get_config``: initializers, regularizers, layers) and functions serialised by
    ``keras.saving.serialize_keras_object``; other values unchanged."""
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, list | tuple):
        return [config_value(v) for v in value]
    if isinstance(value, dict):
        return {k: config_value(v) for k, v in value.items()}
    if hasattr(value, "get_config") or callable(value):
        return keras.saving.serialize_keras_object(value)
    return value


def attribute_name(obj: Any, argument: str) -> str:
    """The attribute of ``obj`` that holds constructor argument ``argument``: its own name, with a
    trailing underscore where the class already uses it (``keras.Model.input_shape`` and
    ``layers`` give ``input_shape_`` and ``layers_``)."""
    return f"{argument}_" if hasattr(type(obj), argument) else argument


def capture_arguments(cls: type, init: Any) -> Any:
    """Wrap ``cls.__init__`` (``init``): check the keywords (``cls._check_kwargs``), set the
    named arguments as attributes, run ``init``, then record the attributes as the config."""
    signature = inspect.signature(init)
    named = [n for n, p in signature.parameters.items() if p.kind in _NAMED][1:]  # not self
    captured = [n for n in named if n not in cls.config_exclude]

    def set_arguments(self: Any, bound: inspect.BoundArguments, overwrite: bool) -> dict[str, str]:
        attributes = {argument: attribute_name(self, argument) for argument in named}
        for argument, attribute in attributes.items():
            if overwrite or attribute not in self.__dict__:  # else the constructor's own form
                value = cls._normalise_argument(argument, bound.arguments[argument])
                setattr(self, attribute, value)
        return attributes

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs = cls._check_kwargs(kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        if cls._arguments_before_init:
            set_arguments(self, bound, overwrite=True)
        init(self, *args, **kwargs)
        attributes = set_arguments(self, bound, overwrite=False)
        config = {argument: plain(getattr(self, attributes[argument])) for argument in captured}
        if cls._inherit_config:  # a parent constructor (called from init) recorded its own
            config = {**getattr(self, "_constructor_config", {}), **config}
        # Outermost constructor last: a subclass's arguments extend (or replace) its parent's.
        object.__setattr__(self, "_constructor_config", config)

    __init__.__signature__ = signature  # also for inspect.getfullargspec (Keras reads both)
    return __init__


class Configurable:
    """Mixin: the constructor's named arguments are the config (see the module docstring).

    Put it before the Keras class: ``class Block(Configurable, keras.layers.Layer)`` (or use
    :class:`ConfigurableLayer`). Every subclass that defines ``__init__`` takes its
    hyper-parameters as named arguments plus ``**kwargs`` for Keras (``name``, ``dtype``,
    ``trainable``, or the Keras base class's own arguments) and calls ``super().__init__``.
    ``get_config`` is the Keras base class's config updated with the recorded arguments; a
    subclass's arguments are added to those its parent's constructor recorded.

    Arguments whose value is not serialisable as it is are handled by :func:`config_value`
    (Keras objects are serialised; the constructor must accept the serialised form, e.g. through
    ``keras.initializers.get``). An argument the Keras base class already puts in its own config
    (in the form it normalised) can be left to it with ``config_exclude``.

    Example:
        >>> class Scale(ConfigurableLayer):
        ...     def __init__(self, factor: float = 2.0, **kwargs):
        ...         super().__init__(**kwargs)
        ...     def call(self, x):
        ...         return x * self.factor
        >>> Scale(3.0).get_config()["factor"]
        3.0
    """

    #: named constructor arguments left out of the recorded config
    config_exclude: ClassVar[tuple[str, ...]] = ()
    #: add to the config a parent constructor recorded (False: the outermost one replaces it)
    _inherit_config: ClassVar[bool] = True
    #: set the argument attributes before the constructor body runs (False: after it, for the
    #: ones it did not set; a functional ``keras.Model`` gets its class, hence the names it
    #: reserves such as ``input_shape``, only in ``keras.Model.__init__``)
    _arguments_before_init: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = capture_arguments(cls, cls.__dict__["__init__"])

    @classmethod
    def _check_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of a constructor call, checked before anything is built."""
        return kwargs

    @classmethod
    def _normalise_argument(cls, argument: str, value: Any) -> Any:
        """The attribute value for constructor argument ``argument`` (tuples become lists)."""
        return plain(value) if isinstance(value, list | tuple) else value

    @property
    def constructor_config(self) -> dict[str, Any]:
        """The recorded constructor arguments, serialised (:func:`config_value`)."""
        recorded = self.__dict__.get("_constructor_config", {})
        return {k: config_value(v) for k, v in recorded.items()}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.constructor_config}


class ConfigurableLayer(Configurable, keras.layers.Layer):
    """A ``keras.layers.Layer`` whose config is its constructor's named arguments.

    See :class:`Configurable`. Register subclasses with
    ``@keras.saving.register_keras_serializable(package="kerasdl")``.
    """
