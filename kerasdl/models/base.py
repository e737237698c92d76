"""What every kerasdl classifier shares: the head contract and backbone access.

Every registered classifier is a ``keras.Model`` subclass that builds a functional graph in
``__init__`` (DESIGN.md convention 2) and follows one contract (convention 4, after timm's
``forward_features`` / ``forward_head`` and keras-hub's Backbone/Task split):

* the pooled feature vector is the output of a layer named ``"pre_logits"``;
* the classifier is a ``Dense`` layer named ``"head"`` that returns **logits** (float32 under a
  mixed-precision policy); with ``num_classes=0`` there is no head and the model returns the
  pooled features.

:func:`feature_extractor` returns the backbone (input -> pre-logits) of any such model, which is
what the probes, SimCLR/MoCo and transfer learning use.
"""

from __future__ import annotations

import keras

PRE_LOGITS = "pre_logits"
HEAD = "head"


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
