"""MoCo v2: momentum contrast with a queue of negative keys.

A query encoder (backbone pre-logits + MLP head) embeds one view of each image; a key encoder, the
momentum average of the query encoder (``m = 0.999``), embeds the other view. InfoNCE classifies
each query against its own key (index 0) and the ``K`` keys in the queue, which is then refreshed
first-in first-out with the current batch of keys (gathered from all replicas under a
``tf.distribute`` strategy, as MoCo's ``concat_all_gather``).

The key encoder is a copy that receives no gradient; its batch normalization layers are left
trainable so that Keras runs them with batch statistics, as MoCo's key encoder does (with frozen
normalization the keys of a fresh network are dominated by the mismatch between its initial
moving statistics and the data, and all look alike). MoCo's Shuffle BN, which hides a batch's
composition across GPUs, is not reproduced: on one device every image of a batch shares its
statistics in both branches.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from kerasdl.methods.base import clone_backbone, ema_update
from kerasdl.methods.losses import info_nce, l2_normalize
from kerasdl.methods.simclr import (
    ProjectedEncoder,
    contrastive_accuracy,
    projection_head,
    unpack_views,
)
from kerasdl.models.base import feature_extractor


def _unit_rows(seed):
    def init(shape, dtype=None):
        return keras.ops.normalize(keras.random.normal(shape, seed=seed), axis=1)

    return init


@keras.saving.register_keras_serializable(package="kerasdl")
class MoCo(ProjectedEncoder):
    """MoCo v2 self-supervised pretraining of a registry backbone.

    Args:
        backbone: a registry model with a ``pre_logits`` layer (its head is ignored).
        projection_dim: output width of the MLP head (128).
        hidden_dim: hidden width of the MLP head (``None``: the feature width; 2048 for ResNet-50).
        queue_size: number of negative keys K (65536; use a few thousand for small data sets).
        momentum: key-encoder momentum m (0.999).
        temperature: InfoNCE temperature (0.2 in MoCo v2).
        head_batch_norm: MoCo v3's head for ViTs: batch normalization after both layers of the
            MLP head (``projection_head(..., batch_norm=True)``), in the key encoder with batch
            statistics too. Off by default (MoCo v2's head has none). A ViT has no batch norm:
            at random initialization it maps all images to nearly one feature vector (mean
            cosine 0.9998 on the digits data), every key is alike and InfoNCE stays at
            ``log(K + 1)``; the head's batch norm centres the keys across the batch.
        seed: seed of the method's random generator and the queue's initialization.

    Call arguments:
        inputs: images ``(B, H, W, C)``.
        training: whether the query encoder runs in training mode.

    Training and validation data: batches ``(view1, view2)`` as for SimCLR (view 1 -> queries,
    view 2 -> keys). ``call`` returns the query projections. Logged: ``loss`` and
    ``contrastive_accuracy`` (how often the positive has the largest logit).

    Example:
        >>> net = kerasdl.create_model("simple_cnn", num_classes=0, input_shape=(32, 32, 3))
        >>> method = MoCo(net, queue_size=4096)
        >>> method.compile(keras.optimizers.SGD(0.03, momentum=0.9))

    Reference:
        He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual Representation
        Learning", CVPR 2020 (Algorithm 1); Chen, Fan, Girshick & He, "Improved Baselines with
        Momentum Contrastive Learning" (MoCo v2), arXiv:2003.04297, 2020 (MLP head, tau 0.2);
        Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers"
        (MoCo v3), ICCV 2021 (section 4 and appendix: batch norm in the MLP heads of ViTs).
    """

    def __init__(
        self,
        backbone: keras.Model,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.2,
        head_batch_norm: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, seed=seed, **kwargs)
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.queue_size = int(queue_size)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.head_batch_norm = bool(head_batch_norm)
        head = dict(batch_norm=self.head_batch_norm)
        feat_dim, hidden = self._add_projection(backbone, **head)
        self.key_backbone = clone_backbone(backbone, "key")
        self.key_encoder = feature_extractor(self.key_backbone)
        self.key_projector = projection_head(
            feat_dim, hidden, self.projection_dim, "key_proj", **head
        )
        self.key_projector.set_weights(self.projector.get_weights())
        self.key_projector.trainable = False
        for layer in [*self.key_backbone._flatten_layers(), *self.key_projector._flatten_layers()]:
            if isinstance(layer, keras.layers.BatchNormalization) or hasattr(layer, "moving_mean"):
                layer.trainable = True  # batch statistics in the key encoder (no gradient)
        self.queue = self.add_weight(
            shape=(self.queue_size, self.projection_dim),
            initializer=_unit_rows(seed),
            trainable=False,
            dtype="float32",
            aggregation="only_first_replica",
            name="queue",
        )
        self.queue_ptr = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="int32",
            aggregation="only_first_replica",
            name="queue_ptr",
        )
        self._make_trackers(["loss", "contrastive_accuracy"])
        self._finish_build()

    def keys(self, images, training: bool = True):
        """L2-normalized key projections from the momentum encoder (no gradient)."""
        k = self.key_projector(self.key_encoder(images, training=training), training=training)
        return tf.stop_gradient(l2_normalize(k))

    @property
    def trainable_weights(self) -> list:
        # the key encoder's normalization layers are trainable only to use batch statistics:
        # keep them out of the optimizer (also when a saved method is loaded)
        key = {id(w) for w in [*self.key_backbone.weights, *self.key_projector.weights]}
        return [w for w in super().trainable_weights if id(w) not in key]

    @property
    def trainable_variables(self) -> list:
        return self.trainable_weights

    @property
    def query_variables(self) -> list:
        """The variables the gradient updates: the query encoder and its projection head (not the
        key encoder)."""
        return self.loss_variables

    def momentum_update(self) -> None:
        """``theta_k <- m theta_k + (1 - m) theta_q`` for encoder and head."""
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_projector, self.projector, self.momentum)

    def enqueue(self, keys) -> None:
        """Write ``keys`` (all replicas') over the oldest queue entries; advance the pointer."""
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            keys = ctx.all_gather(keys, axis=0)
        keys = tf.cast(keys, self.queue.dtype)
        n = tf.shape(keys)[0]
        idx = (tf.cast(self.queue_ptr, tf.int32) + tf.range(n)) % self.queue_size
        self.queue.assign(tf.tensor_scatter_nd_update(self.queue, idx[:, None], keys))
        self.queue_ptr.assign((self.queue_ptr + n) % self.queue_size)

    def train_step(self, data):
        v1, v2 = unpack_views(data)
        k = self.keys(v2)
        with tf.GradientTape() as tape:
            q = self(v1, training=True)
            loss, logits = info_nce(q, k, self.queue, self.temperature)
        self._apply(tape, loss, self.query_variables)
        self.momentum_update()
        self.enqueue(k)
        acc = contrastive_accuracy(logits, tf.zeros(tf.shape(logits)[:1], tf.int32))
        return self._log({"loss": loss, "contrastive_accuracy": acc})

    def test_step(self, data):
        v1, v2 = unpack_views(data)
        loss, logits = info_nce(
            self(v1, training=False), self.keys(v2, training=False), self.queue, self.temperature
        )
        acc = contrastive_accuracy(logits, tf.zeros(tf.shape(logits)[:1], tf.int32))
        return self._log({"loss": loss, "contrastive_accuracy": acc})
