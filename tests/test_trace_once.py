"""A run traces its train step once: the optimizer's variables exist before ``fit`` traces it.

Keras's TensorFlow trainer builds the optimizer (and a string metric's variables) inside the
first trace of the train step when ``compile`` ran outside a ``tf.distribute`` scope; a
``tf.function`` that creates variables is then traced twice (:mod:`kerasdl.training.single_trace`).
These tests count the traces of the step ``kerasdl train`` runs, for a classifier, a ViT method
(its DropPath layers have no weights and must count as built) and the DARTS search (two
optimizers), and of a user's own ``fit`` and ``evaluate`` on a kerasdl model.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import write_recipe
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

from kerasdl.config import load_recipe
from kerasdl.registry import create_model
from kerasdl.training.runner import train
from kerasdl.training.single_trace import TracesOnce, create_optimizer_variables

REPO = Path(__file__).resolve().parent.parent


def _count_traces(
    monkeypatch: pytest.MonkeyPatch, cls: type, step: str = "train_step"
) -> list[int]:
    """Count the calls of ``cls.train_step`` (Python runs it once per trace)."""
    calls = [0]
    original = getattr(cls, step)

    def counted(self, data):
        calls[0] += 1
        return original(self, data)

    monkeypatch.setattr(cls, step, counted)
    return calls


def _keras_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave the building to Keras, as without kerasdl's change."""
    import kerasdl.training.runner as runner

    monkeypatch.setattr(runner, "create_optimizer_variables", lambda model: False)
    monkeypatch.setattr(
        TracesOnce, "_maybe_symbolic_build", TensorFlowTrainer._maybe_symbolic_build
    )


def test_a_classifier_run_traces_its_train_step_once_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_traces(monkeypatch, TensorFlowTrainer)
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "runs", training={"epochs": 3})
    once = train(load_recipe(recipe), verbose=0)
    assert calls[0] == 1
    # the optimizer left to Keras, as before: two traces, and the very same training
    _keras_default(monkeypatch)
    again = write_recipe(tmp_path / "r2.yaml", tmp_path / "runs2", training={"epochs": 3})
    twice = train(load_recipe(again), verbose=0)
    assert calls[0] == 1 + 2
    assert once.weights_fingerprint == twice.weights_fingerprint
    assert once.metrics == twice.metrics


def test_a_vit_method_run_traces_its_train_step_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kerasdl.methods.mae import MAE

    calls = _count_traces(monkeypatch, MAE)
    cfg = load_recipe(
        REPO / "configs" / "ssl" / "mae_digits.yaml",
        overrides=[
            "training.epochs=1",
            f"run.output_dir={tmp_path / 'runs'}",
            "model.num_layers=1",
            "method.decoder_depth=1",
            "method.probe_labels_per_class=1",
        ],
    )
    train(cfg, verbose=0)
    assert calls[0] == 1


def test_the_darts_search_builds_both_optimizers_before_its_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kerasdl.data import load_data
    from kerasdl.nas.config import load_search_recipe
    from kerasdl.nas.search import DartsSearch
    from kerasdl.nas.task import SearchTask

    cfg = load_search_recipe(REPO / "configs" / "darts_search_digits.yaml")
    own = DartsSearch.build_optimizers
    with monkeypatch.context() as m:  # the task builds them too: start from unbuilt ones here
        m.setattr(DartsSearch, "build_optimizers", lambda self: None)
        search = SearchTask(cfg, load_data(cfg.data, 0)).build(steps_per_epoch=2, lr_factor=1.0)
    assert DartsSearch.build_optimizers is own
    assert not search.optimizer.built and not search.arch_optimizer.built
    assert create_optimizer_variables(search)  # through the search's own build_optimizers
    assert search.optimizer.built and search.arch_optimizer.built
    # weights and alphas apart, not one optimizer over every trainable variable
    alphas = [v.name for v in search.network.arch_variables]
    assert alphas and len(alphas) < len(search.network.trainable_variables)
    weight_slots = " ".join(v.path for v in search.optimizer.variables)
    assert not any(a in weight_slots for a in alphas), alphas
    arch_slots = " ".join(v.path for v in search.arch_optimizer.variables)
    assert all(a in arch_slots for a in alphas)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("efficientnet_b0", {"width_mult": 0.25}),  # SiLU layers: weightless, built at init
        ("vit_ti_16", {"num_layers": 1}),  # DropPath layers
        ("resnet20", {}),
    ],
)
def test_a_new_model_is_built_whole_so_its_optimizer_can_be_created(
    name: str, kwargs: dict
) -> None:
    model = create_model(name, num_classes=3, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy")
    assert create_optimizer_variables(model)
    optimizer = model.optimizer
    assert optimizer.built
    assert len(optimizer.variables) > 2 * len(model.trainable_variables)  # both Adam moments
    assert not create_optimizer_variables(model)  # already built: nothing more


def _user_script(kind: str) -> tuple[keras.Model, list]:
    """What a user's own script does with a kerasdl model: compile with a string metric, then
    ``fit`` (arrays, or a shuffled ``tf.data`` pipeline), ``train_on_batch`` or ``evaluate``."""
    rng = np.random.default_rng(0)
    x = rng.random((48, 16, 16, 3), dtype=np.float32)
    y = rng.integers(0, 4, 48)
    keras.utils.set_random_seed(0)
    model = create_model("resnet20", num_classes=4, input_shape=(16, 16, 3))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    if kind == "evaluate":
        return model, [model.evaluate(x, y, verbose=0, return_dict=True)]
    if kind == "train_on_batch":
        logs = [model.train_on_batch(x[i : i + 16], y[i : i + 16]) for i in (0, 16, 32)]
        return model, logs
    if kind == "tf.data":
        data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(48, seed=1).batch(16)
        return model, [model.fit(data, epochs=2, verbose=0).history]
    return model, [model.fit(x, y, batch_size=16, epochs=2, verbose=0).history]


def _same_weights(a: keras.Model, b: keras.Model) -> bool:
    pairs = zip(a.get_weights(), b.get_weights(), strict=True)
    return all(np.array_equal(u, v) for u, v in pairs)


@pytest.mark.parametrize("kind", ["arrays", "tf.data", "train_on_batch"])
def test_a_users_own_fit_traces_once_with_the_same_result(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_traces(monkeypatch, TensorFlowTrainer)
    model, once = _user_script(kind)
    assert calls[0] == 1
    assert len(model.optimizer.variables) > 2  # momentum: built before the trace
    _keras_default(monkeypatch)
    keras_model, twice = _user_script(kind)
    assert calls[0] == 1 + 2  # Keras alone: the optimizer and "accuracy" built in the trace
    # the same training: no batch drawn from the data (the shuffle order is unchanged)
    assert once == twice
    assert _same_weights(model, keras_model)


def test_evaluate_before_fit_creates_no_optimizer_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left to Keras (a string metric then traces the test step twice), so that evaluating a
    compiled model allocates no optimizer slots the size of the model."""
    calls = _count_traces(monkeypatch, TensorFlowTrainer, "test_step")
    model, results = _user_script("evaluate")
    assert not model.optimizer.built
    assert calls[0] == 2
    _keras_default(monkeypatch)
    keras_model, keras_results = _user_script("evaluate")
    assert results == keras_results
    assert _same_weights(model, keras_model)


def test_the_fine_tune_probe_traces_its_step_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from kerasdl.methods.probes import fine_tune

    calls = _count_traces(monkeypatch, TensorFlowTrainer)
    backbone = create_model("resnet20", num_classes=0, input_shape=(8, 8, 1))
    rng = np.random.default_rng(0)
    data = (rng.random((32, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 32))
    assert 0.0 <= fine_tune(backbone, 3, data, data, epochs=2, batch_size=16) <= 1.0
    assert calls[0] == 1
