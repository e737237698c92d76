"""One trace of the train step: the optimizer's variables exist before ``fit`` traces it.

Keras's TensorFlow trainer, when ``compile`` ran outside a ``tf.distribute`` scope (the default,
and what a user's own script does), leaves the optimizer unbuilt until the first trace of the
train step, where ``optimizer.apply`` builds it. A ``tf.function`` whose first trace creates
variables is traced a second time (TensorFlow lifts the variable creation out, then traces
again), so every ``fit`` paid for two traces of its train step: 18 s of 60 for GoogLeNet's recipe
on this project's 2-core CI machine.

* :func:`create_optimizer_variables` builds the optimizer first; ``kerasdl train`` calls it
  under the strategy's scope right after the model is built.
* :class:`TracesOnce` makes ``model.fit`` and ``train_on_batch`` build the optimizer, compiled
  loss and metrics before they trace: every kerasdl classifier, method and the DARTS search
  gets one trace in a user's own script too.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import keras


def create_optimizer_variables(model: keras.Model) -> bool:
    """Create the compiled optimizer's variables now, before ``fit`` traces the train step.

    The variables are the same ones (over ``model.trainable_variables``, as Keras's
    ``train_step``, kerasdl's methods and :func:`kerasdl.training.callbacks.restore_backup`
    build them) and start at the same values, so training is unchanged, bit for bit.

    A model that builds its optimizers its own way (the DARTS search: weights and alphas apart)
    defines ``build_optimizers()``, which is called instead. Nothing happens when the model is
    not compiled, when the optimizer is already built, or when a layer is still unbuilt (its
    variables would be missing from the list; the step then builds the optimizer as before).
    Call under the strategy's scope.

    Returns:
        Whether the variables were created here.
    """
    own = getattr(model, "build_optimizers", None)
    if callable(own):
        own()
        return True
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built:
        return False
    if not _built_whole(model):
        return False
    optimizer.build(model.trainable_variables)
    return True


class TracesOnce:
    """``keras.Model`` mixin: ``fit`` traces the train step once, not twice.

    Keras's TensorFlow trainer builds the model's training state (optimizer, compiled loss and
    metrics) from a symbolic batch before tracing only under a ``tf.distribute`` strategy; its
    JAX trainer always does. This does the same for the default strategy, just before Keras
    would skip it: the optimizer by :func:`create_optimizer_variables`, then the compiled loss
    and metrics (a string metric such as ``"accuracy"`` creates its variables when built) by
    Keras's own ``_symbolic_build``, from the input's ``element_spec``, so that no batch is
    drawn from the data (a ``tf.data`` shuffle would move on by one order). A model with a
    layer not yet built is left to the trace, as Keras leaves it.

    ``evaluate`` gets the same when it creates no optimizer variables (after ``fit``, or with no
    optimizer or a built one); before any ``fit`` it is left to Keras, so that evaluating a
    model compiled with an optimizer (Keras's default is RMSprop) does not allocate slots the
    size of the model.

    Every kerasdl classifier, method and the DARTS search has it in front of ``keras.Model``
    (``class Classifier(Configurable, TracesOnce, keras.Model)``).

    Example:
        >>> model = kerasdl.create_model("resnet20", num_classes=10)
        >>> model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
        ...               metrics=["accuracy"])
        >>> model.fit(x, y)  # everything built first: one trace of the train step
    """

    @functools.wraps(keras.Model.fit)  # Keras's signature and docstring
    def fit(self, *args: Any, **kwargs: Any) -> Any:
        with _training(self):
            return super().fit(*args, **kwargs)

    @functools.wraps(keras.Model.train_on_batch)
    def train_on_batch(self, *args: Any, **kwargs: Any) -> Any:
        with _training(self):
            return super().train_on_batch(*args, **kwargs)

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        if getattr(self, "_distribute_strategy", None) is not None:  # Keras builds it all
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
            return
        optimizer = getattr(self, "optimizer", None)
        training = getattr(self, "_traces_once_training", False)
        if not training and optimizer is not None and not optimizer.built:
            return  # evaluate before fit: no optimizer variables only to evaluate
        with self.distribute_strategy.scope():
            create_optimizer_variables(self)
            if not _built_whole(self):
                return
            if data_batch is None:
                data_batch = _element_spec(iterator)
            if data_batch is not None:
                self._symbolic_build(data_batch=data_batch)


@contextlib.contextmanager
def _training(model: keras.Model) -> Iterator[None]:
    """Mark ``model`` as in ``fit`` or ``train_on_batch`` (its optimizer is about to be used)."""
    outer = getattr(model, "_traces_once_training", False)
    model._traces_once_training = True
    try:
        yield
    finally:
        model._traces_once_training = outer


def _built_whole(model: keras.Model) -> bool:
    """Whether every layer is built: Keras's own check before it builds an optimizer
    (``Trainer._symbolic_build``)."""
    return all(layer.built for layer in model._flatten_layers())


def _element_spec(iterator: Any) -> Any:
    """The ``tf.TensorSpec`` structure of a Keras epoch iterator's batches, or ``None``."""
    dataset = getattr(iterator, "_distributed_dataset", None)
    return getattr(dataset, "element_spec", None)
