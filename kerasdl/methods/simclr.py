"""SimCLR: contrastive learning of visual representations with the NT-Xent loss.

Two random views of every image go through the backbone (its pooled pre-logits features ``h``)
and a two-layer MLP projection head ``z = W2 relu(W1 h)``; the NT-Xent loss pulls the two views of
an image together against the other ``2N - 2`` views of the batch. Both views go through the
network in one batch. After pretraining the head is dropped and ``h`` is what the probes evaluate.
Under a ``tf.distribute`` strategy each replica contrasts its own share of the batch.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from kerasdl.methods.base import MethodModel, strip_empty
from kerasdl.methods.losses import nt_xent
from kerasdl.models.base import feature_extractor


def projection_head(
    in_dim: int, hidden_dim: int, out_dim: int, name: str, batch_norm: bool = False
) -> keras.Sequential:
    """The two-layer MLP projection ``Dense(hidden) -> ReLU -> Dense(out)`` (built).

    With ``batch_norm`` it is MoCo v3's head (``_build_mlp`` of the reference code, two layers):
    ``Dense(hidden, no bias) -> BN -> ReLU -> Dense(out, no bias) -> BN(no scale/offset)``, with
    PyTorch's batch-norm momentum and epsilon (Keras momentum 0.9, epsilon 1e-5).
    """
    if not batch_norm:
        layers = [
            keras.layers.Dense(hidden_dim, activation="relu", name="fc1"),
            keras.layers.Dense(out_dim, name="fc2"),
        ]
    else:
        bn = dict(momentum=0.9, epsilon=1e-5)
        layers = [
            keras.layers.Dense(hidden_dim, use_bias=False, name="fc1"),
            keras.layers.BatchNormalization(name="bn1", **bn),
            keras.layers.ReLU(name="relu1"),
            keras.layers.Dense(out_dim, use_bias=False, name="fc2"),
            keras.layers.BatchNormalization(center=False, scale=False, name="bn2", **bn),
        ]
    return keras.Sequential([keras.Input((in_dim,)), *layers], name=name)


class ProjectedEncoder(MethodModel):
    """A method that trains the backbone's encoder through an MLP projection head (SimCLR, MoCo):
    ``call`` is ``projector(encoder(x))``."""

    def _add_projection(self, backbone: keras.Model, batch_norm: bool = False) -> tuple[int, int]:
        """Set ``encoder`` (the backbone up to its pooled features) and ``projector`` (the head,
        ``projection_dim`` wide, hidden width ``hidden_dim`` or the feature width); returns the
        feature and hidden widths."""
        self.encoder = feature_extractor(backbone)
        feat_dim = int(self.encoder.output.shape[-1])
        self.projection_dim = int(self.projection_dim)
        hidden = int(self.hidden_dim or feat_dim)
        self.projector = projection_head(
            feat_dim, hidden, self.projection_dim, "projector", batch_norm=batch_norm
        )
        return feat_dim, hidden

    def call(self, inputs, training=None):
        return self.projector(self.encoder(inputs, training=training), training=training)

    @property
    def loss_variables(self) -> list:
        """What the loss depends on: encoder and projection head. The backbone's classification
        head is not part of the method (it would get no gradient: Keras warns about each one)."""
        return [*self.encoder.trainable_variables, *self.projector.trainable_variables]


def unpack_views(data):
    """``(v1, v2)`` or ``((v1, v2), labels)`` -> ``v1, v2``."""
    data = strip_empty(data)
    if isinstance(data, tuple | list) and isinstance(data[0], tuple | list):
        data = data[0]
    return data[0], data[1]


def contrastive_accuracy(logits, labels):
    """Fraction of rows whose largest logit is the positive."""
    return tf.reduce_mean(
        tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
    )


@keras.saving.register_keras_serializable(package="kerasdl")
class SimCLR(ProjectedEncoder):
    """SimCLR self-supervised pretraining of a registry backbone.

    Args:
        backbone: a registry model with a ``pre_logits`` layer (its head is ignored).
        projection_dim: output width of the projection head (128).
        hidden_dim: hidden width of the projection head (``None``: the feature width, as in the
            paper).
        temperature: NT-Xent temperature (0.5 in the paper's CIFAR-10 setting; 0.1 for large
            batches).
        seed: seed of the method's random generator.

    Call arguments:
        inputs: images ``(B, H, W, C)``.
        training: whether the encoder runs in training mode.

    Training and validation data: batches ``(view1, view2)`` (or ``((view1, view2), labels)``,
    labels ignored); see ``kerasdl.data.ssl.contrastive_dataset``. ``call`` returns the
    projections. Logged: ``loss`` and ``contrastive_accuracy`` (how often a view's most similar
    other view is its positive).

    Example:
        >>> net = kerasdl.create_model("simple_cnn", num_classes=0, input_shape=(32, 32, 3))
        >>> method = SimCLR(net)
        >>> method.compile(keras.optimizers.Adam(1e-3))
        >>> method.fit(kerasdl.data.ssl.contrastive_dataset(images, 256), epochs=100)

    Reference:
        Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020 (Algorithm 1; projection head section 4.2; temperature in
        appendix B.9).
    """

    def __init__(
        self,
        backbone: keras.Model,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.5,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, seed=seed, **kwargs)
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.temperature = float(temperature)
        self._add_projection(backbone)
        self._make_trackers(["loss", "contrastive_accuracy"])
        self._finish_build()

    def _loss(self, v1, v2, training: bool):
        z = self(tf.concat([v1, v2], axis=0), training=training)
        n = tf.shape(v1)[0]
        loss, logits, labels = nt_xent(z[:n], z[n:], self.temperature)
        return loss, contrastive_accuracy(logits, tf.cast(labels, tf.int32))

    def train_step(self, data):
        v1, v2 = unpack_views(data)
        with tf.GradientTape() as tape:
            loss, acc = self._loss(v1, v2, True)
        self._apply(tape, loss, self.loss_variables)
        return self._log({"loss": loss, "contrastive_accuracy": acc})

    def test_step(self, data):
        v1, v2 = unpack_views(data)
        loss, acc = self._loss(v1, v2, False)
        return self._log({"loss": loss, "contrastive_accuracy": acc})
