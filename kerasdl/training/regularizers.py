"""Weight penalties of a recipe: L1, L2 and elastic net on the kernels of a model.

``training.l1`` / ``training.l2`` add ``l1 * sum|w| + l2 * sum w^2`` over the model's **kernels**
to the loss (Keras's ``L1L2`` convention: no factor 1/2 on the L2 term, so the gradient of the L2
part is ``2 * l2 * w``). A kernel is a trainable variable named ``kernel`` or ``*_kernel``: the
weights of ``Dense``, ``EinsumDense`` (attention projections), ``Conv2D``, ``DepthwiseConv2D`` and
separable convolutions, the classifier head included. Biases, normalization scales and offsets,
embedding tables, position embeddings, class and mask tokens and DARTS's architecture parameters
are not penalised, as in the usual weight-decay practice (e.g. timm's ``no_weight_decay``).

How the penalty reaches the gradient: :func:`add_kernel_penalties` sets each kernel variable's
``regularizer`` attribute (Keras 3 collects ``regularizer(variable)`` of every *trainable* variable
in ``Layer.losses``), so

* Keras ``fit`` and every loop that runs the model's ``train_step`` (the custom distributed loop)
  add it through ``Model.compute_loss``, scaled per replica by Keras;
* the semi-/self-supervised methods add the penalty of the variables they update in
  ``MethodModel._apply``, and the DARTS search in its loss (``kerasdl.nas.search``);
* a kernel frozen later (transfer learning) stops being penalised, and one unfrozen starts.

The penalty is computed in float32 whatever the mixed-precision policy. It belongs to the training
recipe, not to the model: a ``.keras`` file of a penalised model holds the weights without the
penalty (the variable attribute is not serialized), so a loaded model has no penalty until
:func:`add_kernel_penalties` is called again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras

from kerasdl.errors import UserError


@keras.saving.register_keras_serializable(package="kerasdl")
class KernelPenalty(keras.regularizers.L1L2):
    """``l1 * sum|w| + l2 * sum w^2`` computed in float32 (Keras's ``L1L2`` in full precision).

    Args:
        l1: L1 coefficient.
        l2: L2 coefficient (no factor 1/2).
    """

    def __call__(self, x: Any) -> Any:
        return super().__call__(keras.ops.cast(x, "float32"))


def is_kernel(variable: keras.Variable) -> bool:
    """Whether ``variable`` is a kernel in the sense of :mod:`kerasdl.training.regularizers`."""
    name = variable.name.rsplit("/", 1)[-1]
    return name == "kernel" or name.endswith("_kernel")


def kernel_variables(model: keras.Model | keras.layers.Layer) -> list[keras.Variable]:
    """The kernels of ``model`` that the penalty covers (trainable ones, each once)."""
    return [w for w in model.trainable_weights if is_kernel(w)]


def add_kernel_penalties(model: keras.Model, l1: float, l2: float) -> None:
    """Penalise every kernel of ``model`` with ``l1 * sum|w| + l2 * sum w^2`` (elastic net).

    Sets the ``regularizer`` of each kernel variable (frozen ones included, so that they are
    penalised once unfrozen) to a :class:`KernelPenalty`; calling it again replaces the penalty,
    and ``l1 = l2 = 0`` removes it. See the module docstring for which weights are kernels and how
    ``fit``, the custom loop, the methods and the DARTS search apply it. Call it before the first
    training step: a step already traced (``fit``'s train function) does not see a later change
    until the model is compiled again.

    Args:
        model: a Keras model (a registry classifier, a method's backbone, a search network).
        l1: L1 coefficient (>= 0).
        l2: L2 coefficient (>= 0).

    Raises:
        UserError: a negative coefficient; a registry model that trains by its own rule without
            a loss (the perceptron); a kernel that already has another regularizer.

    Example:
        >>> model = kerasdl.create_model("resnet18", num_classes=10, input_shape=(32, 32, 3))
        >>> add_kernel_penalties(model, l1=0.0, l2=5e-4)
        >>> float(kernel_penalty(model))  # 5e-4 * sum of the squared kernels
    """
    if l1 < 0 or l2 < 0:
        raise UserError(f"training.l1 and training.l2 must be >= 0. Received: l1={l1}, l2={l2}")
    cls = type(model)
    if (
        (l1 or l2)
        and cls.__module__.startswith("kerasdl.models.")
        and cls.train_step is not keras.Model.train_step
    ):
        raise UserError(
            f"training.l1/l2: model {cls.__name__} trains by its own update rule (no loss to "
            "penalise), so an L1/L2 penalty would be ignored; set training.l1 and training.l2 to 0"
        )
    penalty = KernelPenalty(l1=float(l1), l2=float(l2)) if (l1 or l2) else None
    for w in _unique(model.weights):
        if not is_kernel(w):
            continue
        if w.regularizer is not None and not isinstance(w.regularizer, KernelPenalty):
            raise UserError(
                f"training.l1/l2: kernel {w.path} already has a regularizer "
                f"({type(w.regularizer).__name__}); remove it or set training.l1/l2 to 0"
            )
        w.regularizer = penalty


def penalty_of(variables: Iterable[keras.Variable]) -> Any:
    """The summed ``regularizer(v)`` of ``variables`` that carry one, in float32 (0 without any)."""
    terms = [
        keras.ops.cast(v.regularizer(v), "float32")
        for v in _unique(variables)
        if getattr(v, "regularizer", None) is not None
    ]
    if not terms:
        return keras.ops.zeros((), "float32")
    return keras.ops.sum(keras.ops.stack(terms))


def kernel_penalty(model: keras.Model | keras.layers.Layer) -> Any:
    """The current penalty of ``model``'s trainable variables (a float32 scalar tensor)."""
    return penalty_of(model.trainable_weights)


def _unique(variables: Iterable[keras.Variable]) -> list[keras.Variable]:
    seen: set[int] = set()
    out = []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out
