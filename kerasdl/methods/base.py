"""What every training method shares: the wrapped backbone, step bookkeeping, EMA copies, metrics.

A method is a ``keras.Model`` subclass that wraps a registry backbone and overrides ``train_step``
/ ``test_step`` (DESIGN.md convention 5, after the keras-io guide "Customizing what happens in
fit()"). It therefore works with plain ``fit()``, callbacks, TensorBoard, ``tf.distribute``
strategies and mixed-precision policies:

* the loss used for the gradient is divided by the number of replicas in sync (each replica
  averages over its share of the global batch and the optimizer sums the replicas' gradients) and
  passed through ``optimizer.scale_loss`` (loss scaling under ``mixed_float16``);
* every logged quantity is a ``keras.metrics.Mean`` tracker exposed by the ``metrics`` property, so
  Keras resets it each epoch and TensorBoard shows it under its own name;
* randomness inside a step comes from a ``keras.random.SeedGenerator``.

The backend is TensorFlow (``tf.GradientTape``), as for the rest of kerasdl's training code.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from kerasdl.configurable import Configurable
from kerasdl.methods.losses import hard_cross_entropy, soft_cross_entropy
from kerasdl.training.single_trace import TracesOnce


def num_replicas() -> int:
    """Replicas in sync of the current ``tf.distribute`` strategy (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def clone_backbone(model: keras.Model, suffix: str) -> keras.Model:
    """A fresh copy of ``model`` (same class and config, new variables) holding its weights.

    Used for the EMA / teacher / key-encoder copies. The copy is frozen (``trainable=False``): a
    frozen Keras ``BatchNormalization`` runs in inference mode, with the moving statistics that
    the exponential moving average carries over from the student.
    """
    config = model.get_config()
    try:
        config = {**config, "name": f"{model.name}_{suffix}"}
        copy = type(model).from_config(config)
    except (TypeError, ValueError, NotImplementedError):
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


def ema_update(target: keras.Model | list, source: keras.Model | list, decay) -> None:
    """``t <- decay * t + (1 - decay) * s`` for every weight (trainable and statistics).

    Integer variables (counters) are copied.
    """
    t_weights = target.weights if isinstance(target, keras.Model | keras.layers.Layer) else target
    s_weights = source.weights if isinstance(source, keras.Model | keras.layers.Layer) else source
    for t, s in zip(t_weights, s_weights, strict=True):
        if "int" in str(t.dtype):
            t.assign(s)
            continue
        d = tf.cast(decay, t.dtype)
        t.assign(d * t + (1.0 - d) * tf.cast(s, t.dtype))


def strip_empty(data: Any) -> Any:
    """``(x, None, None)`` (as ``train_on_batch(x)`` packs it) -> ``x``."""
    while (
        isinstance(data, tuple | list) and len(data) in (2, 3) and all(d is None for d in data[1:])
    ):
        data = data[0]
    return data


def deserialize(obj: Any) -> Any:
    return keras.saving.deserialize_keras_object(obj)


class MethodModel(Configurable, TracesOnce, keras.Model):
    """Base class of the training methods: a wrapped backbone plus named loss trackers.

    Subclasses set ``self._tracker_names`` before calling :meth:`_make_trackers`, implement
    ``train_step`` (calling :meth:`_apply` for the update) and ``test_step``. A method's config
    is its constructor's named arguments (:class:`~kerasdl.configurable.Configurable`, as for
    the models and layers; the outermost constructor's, which names every argument it takes),
    the backbone serialised within it.

    Args:
        backbone: the wrapped registry model.
        seed: seed of the method's ``keras.random.SeedGenerator``.
    """

    def __init__(self, backbone: keras.Model, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._trackers: dict[str, keras.metrics.Metric] = {}

    def _make_trackers(self, names: list[str], accuracy: bool = False) -> None:
        for n in names:
            self._trackers[n] = keras.metrics.Mean(name=n)
        if accuracy:
            self._trackers["accuracy"] = keras.metrics.CategoricalAccuracy(name="accuracy")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self._trackers.values())

    def _finish_build(self) -> None:
        # Every sub-layer is built in __init__, so fit() need not trace the model symbolically.
        self.built = True

    @property
    def inference_model(self) -> keras.Model:
        """The model to keep after training (saved by the runner as ``backbone.keras``)."""
        return self.backbone

    def extra_callbacks(self, run_dir: Any, sample_images: Any) -> list[keras.callbacks.Callback]:
        """Callbacks the method wants in a run (MAE: its reconstruction PNG); none by default."""
        return []

    def _apply(self, tape: tf.GradientTape, loss, variables: list | None = None) -> None:
        variables = self.trainable_variables if variables is None else variables
        with tape:  # keep recording: penalty and scaling are part of the differentiated graph
            # training.l1/l2 (kerasdl.training.regularizers): the updated variables' penalty, f32
            reg = [v for v in variables if getattr(v, "regularizer", None) is not None]
            if reg:
                penalty = tf.add_n([tf.cast(v.regularizer(v), tf.float32) for v in reg])
                loss = loss + tf.cast(penalty, loss.dtype)
            scaled = self.optimizer.scale_loss(loss / num_replicas())
        grads = tape.gradient(scaled, variables)
        if not self.optimizer.built:  # over every trainable variable, even when a method updates
            # fewer (SimCLR, MoCo): a backup restored into a fresh model, whose optimizer the
            # runner builds over all of them, must find the same optimizer variables
            self.optimizer.build(self.trainable_variables)
        self.optimizer.apply(grads, variables)

    def _log(self, values: dict[str, Any], names: list[str] | None = None) -> dict[str, Any]:
        for k, v in values.items():
            self._trackers[k].update_state(v)
        keep = self._trackers if names is None else {n: self._trackers[n] for n in names}
        return {k: m.result() for k, m in keep.items()}

    def _accuracy(self, y_onehot, logits) -> None:
        self._trackers["accuracy"].update_state(y_onehot, tf.cast(logits, tf.float32))

    _inherit_config = False  # a method's constructor names every argument it takes
    _arguments_before_init = False  # keras.Model tracks attributes only once initialised

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.constructor_config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MethodModel:
        config = dict(config)
        config["backbone"] = deserialize(config["backbone"])
        return cls(**config)


class SemiSupervisedModel(MethodModel):
    """Base of the semi-supervised methods: a classifier trained on labelled + unlabelled batches.

    Training data: each element is ``((x_labelled, y_onehot), u_views)`` where ``u_views`` is a
    tuple of unlabelled batches (the views the method needs; see ``kerasdl.data.ssl``).
    Evaluation data (``evaluate`` / ``validation_data``): ordinary ``(x, y_onehot)`` batches,
    classified by :attr:`inference_model` (the EMA copy when the method evaluates with one).

    Args:
        backbone: a registry classifier returning logits.
        num_classes: number of classes.
        ema_decay: decay of an exponential moving average of the weights used for evaluation
            (``None``: evaluate the trained weights).
        ema_warmup: use ``min(ema_decay, (1 + t) / (10 + t))`` at step ``t`` (the ``num_updates``
            rule of ``tf.train.ExponentialMovingAverage``), so that short runs are not evaluated
            with weights still dominated by the initialization.
        seed: seed of the method's random generator.
    """

    uses_ema_for_eval = False

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int,
        ema_decay: float | None = None,
        ema_warmup: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, seed=seed, **kwargs)
        self.num_classes = int(num_classes)
        self.ema_decay = ema_decay
        self.ema_warmup = bool(ema_warmup)
        self.ema_model = clone_backbone(backbone, "ema") if ema_decay is not None else None

    @property
    def inference_model(self) -> keras.Model:
        return self.ema_model if self.ema_model is not None else self.backbone

    def call(self, inputs, training=None):
        if training:
            return self.backbone(inputs, training=True)
        return self.inference_model(inputs, training=False)

    @staticmethod
    def unpack(data):
        """``((x_l, y_l), u_views)`` -> ``x_l, y_l, tuple(u_views)``."""
        (x_l, y_l), u = strip_empty(data)
        if not isinstance(u, tuple | list):
            u = (u,)
        return x_l, y_l, tuple(u)

    def _update_ema(self) -> None:
        if self.ema_model is not None:
            decay = self.ema_decay
            if self.ema_warmup:  # tf.train.ExponentialMovingAverage's num_updates rule
                n = tf.cast(self.optimizer.iterations, tf.float32)
                decay = tf.minimum(decay, (1.0 + n) / (10.0 + n))
            ema_update(self.ema_model, self.backbone, decay)

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self.inference_model(x, training=False)
        if len(y.shape) == 1:
            loss = hard_cross_entropy(y, logits)
            y = tf.one_hot(tf.cast(y, tf.int32), self.num_classes)
        else:
            loss = soft_cross_entropy(y, logits)
        self._accuracy(y, logits)
        return self._log({"loss": tf.reduce_mean(loss)}, ["loss", "accuracy"])
