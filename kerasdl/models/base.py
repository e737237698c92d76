"""What every kerasdl classifier shares: its config, the head contract and backbone access.

Every registered classifier is a :class:`Classifier`: a ``keras.Model`` subclass that builds a
functional graph in ``__init__`` (DESIGN.md convention 2) and whose ``get_config`` is its
constructor arguments, captured by the base (so no model writes ``self.x = x`` or a
``get_config``). It follows one contract (convention 4, after timm's ``forward_features`` /
``forward_head`` and keras-hub's Backbone/Task split):

* the pooled feature vector is the output of a layer named ``"pre_logits"``;
* the classifier is a ``Dense`` layer named ``"head"`` that returns **logits** (float32 under a
  mixed-precision policy); with ``num_classes=0`` there is no head and the model returns the
  pooled features.

:func:`feature_extractor` returns the backbone (input -> pre-logits) of any such model, which is
what the probes, SimCLR/MoCo and transfer learning use.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import keras

from kerasdl.registry import check_model_kwargs

PRE_LOGITS = "pre_logits"
HEAD = "head"

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, at any depth (YAML- and JSON-friendly)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def attribute_name(model: keras.Model, argument: str) -> str:
    """The attribute of ``model`` that holds constructor argument ``argument``: its own name, with
    a trailing underscore where the (functional) model class already uses it (``input_shape_``,
    ``layers_``)."""
    return f"{argument}_" if hasattr(type(model), argument) else argument


def _capture_arguments(cls: type, init: Any) -> Any:
    """Wrap ``cls.__init__``: check keywords first, then record the bound arguments after it."""
    signature = inspect.signature(init)
    named = [n for n, p in signature.parameters.items() if p.kind in _NAMED][1:]  # not self

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs = check_model_kwargs(cls, kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        config = {}
        for argument in named:
            attribute = attribute_name(self, argument)
            if attribute not in self.__dict__:  # the constructor did not keep its own form
                value = bound.arguments[argument]
                if argument == "input_shape":
                    value = tuple(int(v) for v in value)
                elif isinstance(value, list | tuple):
                    value = _plain(value)
                setattr(self, attribute, value)
            config[argument] = _plain(getattr(self, attribute))
        # Outermost constructor last: a subclass's arguments replace its parent's.
        object.__setattr__(self, "_constructor_config", config)

    __init__.__signature__ = signature  # also for inspect.getfullargspec (Keras reads both)
    return __init__


class Classifier(keras.Model):
    """Base of the kerasdl classifiers: the constructor's arguments are the model's config.

    A subclass takes its hyper-parameters as named arguments (YAML-friendly values) plus
    ``**kwargs`` for Keras (``name``, ``dtype``, ``trainable``), builds its functional graph and
    calls ``super().__init__(inputs=..., outputs=..., **kwargs)``. Its ``__init__`` is wrapped
    (``__init_subclass__``, binding the call to its ``inspect.signature``) so that

    * a keyword it does not take is an :class:`~kerasdl.errors.UnknownArgumentError` before
      anything is built (:func:`~kerasdl.registry.check_model_kwargs`; ``pretrained=False`` and
      ``weights=None`` are dropped);
    * afterwards every named argument, defaults included, is an attribute of the same name
      (``input_shape_``, a tuple of ints, and ``layers_``, where ``keras.Model`` has the name),
      unless the constructor set that attribute itself (to a normalised form, e.g. a genotype);
    * :meth:`get_config` returns ``name`` and those attributes as they were at the end of the
      constructor, tuples as lists: a recipe's ``model:`` section is the constructor call, and
      ``from_config`` / ``.keras`` loading rebuild the model from it.

    A subclass of a classifier with its own ``__init__`` is checked and configured by its own
    signature: it names every argument it takes (its ``**kwargs`` are Keras's).

    Example:
        >>> class Tiny(Classifier):
        ...     def __init__(self, num_classes=10, input_shape=(8, 8, 1), width=16, **kwargs):
        ...         inputs = keras.Input(shape=tuple(input_shape))
        ...         x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(width, 3)(inputs))
        ...         super().__init__(inputs, classifier_head(x, num_classes), **kwargs)
        >>> Tiny(width=8).get_config()["width"]
        8
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _capture_arguments(cls, cls.__dict__["__init__"])

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **self._constructor_config}


def classifier_head(
    features: keras.KerasTensor,
    num_classes: int,
    dropout: float = 0.0,
    dropconnect: float = 0.0,
) -> keras.KerasTensor:
    """Mark ``features`` as the pre-logits and add the dropout + linear head.

    Args:
        features: the pooled features, shape ``(B, D)``.
        num_classes: number of classes; 0 returns the features without a head.
        dropout: dropout rate before the head.
        dropconnect: DropConnect rate on the head's weights (Wan et al. 2013); 0 for a plain
            ``Dense`` head.
    """
    x = keras.layers.Identity(name=PRE_LOGITS)(features)
    if num_classes == 0:
        return x
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    if dropconnect:
        from kerasdl.layers.dropconnect import DropConnectDense

        return DropConnectDense(num_classes, rate=dropconnect, dtype="float32", name=HEAD)(x)
    return keras.layers.Dense(num_classes, dtype="float32", name=HEAD)(x)


def feature_extractor(model: keras.Model, name: str | None = None) -> keras.Model:
    """The backbone of a kerasdl classifier: a model from its inputs to its pre-logits.

    The returned model shares weights (and training state) with ``model``.
    """
    return keras.Model(
        model.inputs, model.get_layer(PRE_LOGITS).output, name=name or f"{model.name}_features"
    )


def check_num_classes(num_classes: int) -> None:
    """Reject a negative class count with a clear message."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 means no head). Received: {num_classes}")
