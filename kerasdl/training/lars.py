"""LARS: layer-wise adaptive rate scaling, the large-batch optimizer of SimCLR and MAE's probe.

For every weight tensor with more than one dimension (kernels), the gradient plus the weight
decay term is rescaled so that its norm is ``trust_coefficient`` times the weight's norm; biases
and normalisation parameters (one dimension) are neither decayed nor rescaled. Then heavy-ball
momentum::

    d = g + wd w                                    (ndim > 1 only)
    d = d * eta ||w|| / ||d||                       (ndim > 1, both norms > 0; else unchanged)
    mu = m mu + d
    w -= lr mu

This is MAE's ``util/lars.py`` (facebookresearch/mae, itself after MoCo v3's), which is SimCLR's
``LARSOptimizer`` with ``exclude_from_layer_adaptation`` = ``exclude_from_weight_decay`` = the
one-dimensional variables. ``weight_decay`` here is this coupled term inside the adaptation, not
Keras's decoupled decay.

Reference:
    You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", arXiv:1708.03888,
    2017 (Algorithm 1); Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020 (appendix B.1); He et al., "Masked Autoencoders Are Scalable
    Vision Learners", CVPR 2022 (appendix A.2).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasdl")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise adaptive rate scaling with momentum (see the module docstring).

    Args:
        learning_rate: a float or a ``LearningRateSchedule``.
        momentum: m, the heavy-ball momentum (MAE: 0.9).
        weight_decay: the coupled decay added to the kernels' gradients before the adaptation
            (MAE's linear probe: 0; SimCLR: 1e-6).
        trust_coefficient: eta (0.001 in MAE and SimCLR).
        **kwargs: Keras optimizer options (``clipnorm``, ``use_ema``, ...; not ``weight_decay``,
            which is this optimizer's own).

    Example:
        >>> opt = LARS(learning_rate=0.1, momentum=0.9)
        >>> model.compile(optimizer=opt, loss="categorical_crossentropy")
    """

    def __init__(
        self,
        learning_rate: Any = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        name: str = "lars",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1). Received: {momentum}")
        if weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(
                "weight_decay must be >= 0 and trust_coefficient > 0. "
                f"Received: {weight_decay}, {trust_coefficient}"
            )
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.trust_coefficient = float(trust_coefficient)

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in var_list]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        lr = ops.cast(learning_rate, variable.dtype)
        d = ops.cast(gradient, variable.dtype)
        if len(variable.shape) > 1:  # kernels: decay and adapt; biases and norms: neither
            if self.lars_weight_decay:
                d = ops.add(d, ops.multiply(self.lars_weight_decay, variable))
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            d_norm = ops.sqrt(ops.sum(ops.square(d)))
            ratio = ops.divide(
                ops.multiply(self.trust_coefficient, w_norm),
                ops.where(d_norm > 0, d_norm, ops.ones_like(d_norm)),
            )
            q = ops.where(ops.logical_and(w_norm > 0, d_norm > 0), ratio, ops.ones_like(ratio))
            d = ops.multiply(d, q)
        mu = self.momentums[self._get_variable_index(variable)]
        self.assign(mu, ops.add(ops.multiply(self.momentum, mu), d))
        self.assign_sub(variable, ops.multiply(lr, mu))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            weight_decay=self.lars_weight_decay,
            trust_coefficient=self.trust_coefficient,
        )
        return config
