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

from typing import Any

import keras

from kerasdl.configurable import Configurable
from kerasdl.registry import check_model_kwargs
from kerasdl.training.single_trace import TracesOnce

PRE_LOGITS = "pre_logits"
HEAD = "head"


class Classifier(Configurable, TracesOnce, keras.Model):
    """Base of the kerasdl classifiers: the constructor's arguments are the model's config.

    A subclass takes its hyper-parameters as named arguments (YAML-friendly values) plus
    ``**kwargs`` for Keras (``name``, ``dtype``, ``trainable``), builds its functional graph and
    calls ``super().__init__(inputs=..., outputs=..., **kwargs)``. Its ``__init__`` is wrapped
    (:class:`~kerasdl.configurable.Configurable`, the mechanism kerasdl's layers share) so that

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

    _inherit_config = False  # a subclass names every argument it takes
    _arguments_before_init = False  # keras.Model.__init__ makes it Functional (input_shape)

    @classmethod
    def _check_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        return check_model_kwargs(cls, kwargs)

    @classmethod
    def _normalise_argument(cls, argument: str, value: Any) -> Any:
        if argument == "input_shape":
            return tuple(int(v) for v in value)
        return super()._normalise_argument(argument, value)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.constructor_config}

    def _init_pooled(
        self,
        inputs: keras.KerasTensor,
        features: keras.KerasTensor,
        num_classes: int,
        dropout: float = 0.0,
        dropconnect: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """End a convolutional constructor: global average pooling (``avg_pool``) of the last
        feature map, the :func:`classifier_head`, and the functional ``keras.Model`` init."""
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
        outputs = classifier_head(x, num_classes, dropout, dropconnect)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)


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
