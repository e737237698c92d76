"""Mean Teacher: consistency with an exponential moving average of the student's weights.

The teacher is an EMA of the student (decay 0.99 during the ramp-up, 0.999 after, and never more
than ``1 - 1 / (t + 1)`` after the ``t``-th update, so early teachers average the student's
weights uniformly: 1/2, 2/3, 3/4, ... as in the authors' PyTorch code). The student is trained
with the labelled cross-entropy plus ``w(t)`` times the squared difference between its softmax and
the teacher's softmax on a differently augmented view of the same unlabelled image; ``w(t)`` ramps
up along ``exp(-5 (1 - t)^2)``. The teacher is used for evaluation.

The teacher is a frozen copy, so its batch normalization runs in inference mode with moving
statistics that are themselves averaged from the student's (the reference PyTorch code lets the
teacher compute batch statistics instead); its dropout is active, as in the paper.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from kerasdl.methods.base import SemiSupervisedModel, ema_update
from kerasdl.methods.losses import sigmoid_rampup, soft_cross_entropy, softmax_mse


def mean_teacher_decay(step, rampup_steps: int, decay: float, rampup_decay: float):
    """The teacher's EMA decay for the ``step``-th optimizer update (1-based).

    ``min(1 - 1/(step + 1), alpha)``, ``alpha = rampup_decay`` for the first ``rampup_steps``
    updates and ``decay`` after. ``step`` counts the update just applied, as the authors'
    ``global_step`` after ``global_step += 1`` (CuriousAI/mean-teacher ``pytorch/main.py``,
    ``update_ema_variables``): the first update uses 1/2, the second 2/3, ...; the two-phase
    ``alpha`` is their TensorFlow code's (``ema_decay_during_rampup`` / ``_after_rampup``).
    """
    step = tf.cast(step, tf.float32)
    alpha = tf.where(step <= float(rampup_steps), rampup_decay, decay)
    return tf.minimum(1.0 - 1.0 / (step + 1.0), alpha)


@keras.saving.register_keras_serializable(package="kerasdl")
class MeanTeacher(SemiSupervisedModel):
    """Mean Teacher semi-supervised training around a classifier.

    Args:
        backbone: a registry classifier returning logits (the student).
        num_classes: number of classes.
        consistency_weight: maximum consistency weight (100 for the paper's CIFAR-10 runs, with
            the squared error averaged over classes).
        rampup_steps: optimizer steps of the Gaussian ramp-up of the consistency weight and of the
            lower EMA decay.
        ema_decay: the teacher's decay after the ramp-up (0.999).
        rampup_ema_decay: the teacher's decay during the ramp-up (0.99).
        seed: seed of the method's random generator.

    Call arguments:
        inputs: images ``(B, H, W, C)``.
        training: the student when true, else the teacher.

    Training data: ``((x_labelled, y_onehot), (u_student, u_teacher))``, two augmentations of the
    same unlabelled images (``views="two_weak"`` in ``kerasdl.data.ssl``). Logged: ``loss``,
    ``loss_x``, ``loss_u``, ``weight_u``, ``accuracy`` (student on the labelled batch).

    Example:
        >>> method = MeanTeacher(kerasdl.create_model("simple_cnn", num_classes=10), 10)
        >>> method.compile(keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))

    Reference:
        Tarvainen & Valpola, "Mean teachers are better role models: Weight-averaged consistency
        targets improve semi-supervised deep learning results", NeurIPS 2017, section 2 and
        appendix B (decay 0.99 / 0.999, sigmoid ramp-up, softmax MSE consistency).
    """

    def __init__(
        self,
        backbone: keras.Model,
        num_classes: int,
        consistency_weight: float = 100.0,
        rampup_steps: int = 4000,
        ema_decay: float = 0.999,
        rampup_ema_decay: float = 0.99,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, num_classes, ema_decay=ema_decay, seed=seed, **kwargs)
        self.consistency_weight = float(consistency_weight)
        self.rampup_steps = int(rampup_steps)
        self.rampup_ema_decay = float(rampup_ema_decay)
        self._make_trackers(["loss", "loss_x", "loss_u", "weight_u"], accuracy=True)
        self._finish_build()

    @property
    def teacher(self) -> keras.Model:
        return self.ema_model

    def _update_ema(self) -> None:
        # iterations already counts the update just applied: the authors' global_step
        decay = mean_teacher_decay(
            self.optimizer.iterations, self.rampup_steps, self.ema_decay, self.rampup_ema_decay
        )
        ema_update(self.teacher, self.backbone, decay)

    def train_step(self, data):
        x_l, y_l, u = self.unpack(data)
        u_student, u_teacher = u[0], u[1]
        n_l = tf.shape(x_l)[0]
        w = self.consistency_weight * sigmoid_rampup(self.optimizer.iterations, self.rampup_steps)
        teacher_logits = tf.stop_gradient(self.teacher(u_teacher, training=True))
        with tf.GradientTape() as tape:
            logits = self.backbone(tf.concat([x_l, u_student], axis=0), training=True)
            logits_l = logits[:n_l]
            loss_x = tf.reduce_mean(soft_cross_entropy(y_l, logits_l))
            loss_u = tf.reduce_mean(softmax_mse(logits[n_l:], teacher_logits))
            loss = loss_x + w * loss_u
        self._apply(tape, loss)
        self._update_ema()
        self._accuracy(y_l, logits_l)
        return self._log({"loss": loss, "loss_x": loss_x, "loss_u": loss_u, "weight_u": w})
