"""Optimizers of a recipe against their published update rules, computed in NumPy.

Each optimizer built by ``build_optimizer`` takes two steps on one variable with fixed gradients;
the result must equal the formula (with Keras's exact conventions, noted per case). Clipping by
norm and by global norm, gradient accumulation (against one large batch, in a real ``fit``) and
the weight EMA (validation and the final weights use the averages) are checked the same way.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from kerasdl.config import OptimizerConfig
from kerasdl.training.optimizers import build_optimizer

W0 = np.array([0.5, -1.0, 2.0], dtype=np.float64)
GRADS = [np.array([0.1, -0.2, 0.3]), np.array([-0.05, 0.4, 0.2])]
LR = 0.1
RTOL = 2e-5  # float32 arithmetic against a float64 reference


def run_steps(cfg: OptimizerConfig, lr: float = LR, grads: list | None = None) -> np.ndarray:
    """Apply ``grads`` one step each to a float32 variable starting at ``W0``.

    Float32 as in training (Keras casts Python hyper-parameters through float32, so float64
    variables would not be more exact); the NumPy reference is float64, hence ``RTOL``.
    """
    opt = build_optimizer(cfg, lr)
    w = keras.Variable(W0.copy(), dtype="float32")
    for g in grads or GRADS:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g, "float32"), w)])
    return np.asarray(w.numpy())


def numpy_reference(name: str, c: OptimizerConfig, wd: float = 0.0) -> np.ndarray:
    """The published update rules, in Keras's conventions; ``wd`` is decoupled decay."""
    w = W0.copy()
    v = np.zeros_like(w)  # momentum / first moment
    a = np.full_like(w, c.initial_accumulator_value) if name == "adagrad" else np.zeros_like(w)
    m = 0.9 if c.momentum is None else c.momentum  # SGD's momentum when unset
    for t, g in enumerate(GRADS, start=1):
        w = w - LR * wd * w  # decoupled weight decay (Loshchilov & Hutter), applied first
        if name == "sgd":
            w = w - LR * g
        elif name == "momentum":  # Polyak heavy ball, velocity form
            v = m * v - LR * g
            w = w + v
        elif name == "nesterov":  # Sutskever et al. 2013 form used by Keras
            v = m * v - LR * g
            w = w + m * v - LR * g
        elif name == "adagrad":  # Duchi et al.; Keras: epsilon inside the square root
            a = a + g**2
            w = w - LR * g / np.sqrt(a + c.epsilon)
        elif name == "rmsprop":  # Tieleman & Hinton; Keras: epsilon inside the square root
            a = c.rho * a + (1 - c.rho) * g**2
            v = (c.momentum or 0.0) * v + LR * g / np.sqrt(a + c.epsilon)  # TF / PyTorch form
            w = w - v
        elif name in ("adam", "adamw"):  # Kingma & Ba, the "epsilon hat" form of section 2
            v = c.beta_1 * v + (1 - c.beta_1) * g
            a = c.beta_2 * a + (1 - c.beta_2) * g**2
            alpha = LR * np.sqrt(1 - c.beta_2**t) / (1 - c.beta_1**t)
            w = w - alpha * v / (np.sqrt(a) + c.epsilon)
        else:
            raise AssertionError(name)
    return w


@pytest.mark.parametrize(
    "name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
)
def test_two_steps_match_published_update(name: str) -> None:
    cfg = OptimizerConfig(name=name, learning_rate=LR, momentum=0.8, epsilon=1e-3)
    got = run_steps(cfg)
    np.testing.assert_allclose(got, numpy_reference(name, cfg), rtol=RTOL)
    assert not np.allclose(got, W0)


def test_rmsprop_momentum_is_used_and_off_by_default() -> None:
    """EfficientNet's RMSProp (momentum 0.9, TensorFlow's form); unset: no momentum, as Keras."""
    plain = OptimizerConfig(name="rmsprop", learning_rate=LR, epsilon=1e-3)
    heavy = OptimizerConfig(name="rmsprop", learning_rate=LR, epsilon=1e-3, momentum=0.9)
    zero = OptimizerConfig(name="rmsprop", learning_rate=LR, epsilon=1e-3, momentum=0.0)
    np.testing.assert_allclose(run_steps(plain), run_steps(zero), rtol=1e-12)
    np.testing.assert_allclose(run_steps(heavy), numpy_reference("rmsprop", heavy), rtol=RTOL)
    assert not np.allclose(run_steps(heavy), run_steps(plain), rtol=RTOL)


@pytest.mark.parametrize("name", ["adamw", "momentum", "adam"])
def test_decoupled_weight_decay(name: str) -> None:
    cfg = OptimizerConfig(name=name, learning_rate=LR, weight_decay=0.05)
    got = run_steps(cfg)
    np.testing.assert_allclose(got, numpy_reference(name, cfg, wd=0.05), rtol=RTOL)
    # The decay really acted: without it the result differs.
    assert not np.allclose(got, numpy_reference(name, cfg, wd=0.0), rtol=RTOL)


def test_adamw_zero_decay_is_adam() -> None:
    cfg = OptimizerConfig(name="adamw", learning_rate=LR, weight_decay=0.0)
    adam = OptimizerConfig(name="adam", learning_rate=LR)
    np.testing.assert_allclose(run_steps(cfg), run_steps(adam), rtol=1e-12)


def test_clipnorm_per_variable_and_global() -> None:
    g1, g2 = np.array([3.0, 4.0]), np.array([0.0, 1.0])  # norms 5 and 1, global sqrt(26)

    def step(cfg: OptimizerConfig) -> tuple[np.ndarray, np.ndarray]:
        opt = build_optimizer(cfg, 1.0)
        v1 = keras.Variable(np.zeros(2), dtype="float64")
        v2 = keras.Variable(np.zeros(2), dtype="float64")
        opt.apply_gradients(
            [(keras.ops.convert_to_tensor(g1), v1), (keras.ops.convert_to_tensor(g2), v2)]
        )
        return -np.asarray(v1.numpy()), -np.asarray(v2.numpy())

    # clipnorm=2: each gradient rescaled to norm <= 2 on its own (Pascanu et al. 2013).
    c1, c2 = step(OptimizerConfig(name="sgd", clipnorm=2.0))
    np.testing.assert_allclose(c1, g1 * 2.0 / 5.0, rtol=1e-6)
    np.testing.assert_allclose(c2, g2, rtol=1e-6)
    # global_clipnorm=2: all gradients scaled by 2 / global norm.
    c1, c2 = step(OptimizerConfig(name="sgd", global_clipnorm=2.0))
    scale = 2.0 / np.sqrt(26.0)
    np.testing.assert_allclose(c1, g1 * scale, rtol=1e-6)
    np.testing.assert_allclose(c2, g2 * scale, rtol=1e-6)


def _dense_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def _data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, n)]
    return x, y


@pytest.mark.parametrize("name,eager", [("sgd", False), ("adam", True)])
def test_gradient_accumulation_matches_large_batch(name: str, eager: bool) -> None:
    n_acc, b = 4, 8
    x, y = _data(n_acc * b)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)

    acc = _dense_model()
    acc.compile(
        build_optimizer(OptimizerConfig(name=name, gradient_accumulation_steps=n_acc), 0.05),
        loss,
        run_eagerly=eager,  # graph mode for one optimizer, eager (no tracing cost) for the other
    )
    acc.fit(x, y, batch_size=b, epochs=1, shuffle=False, verbose=0)

    big = _dense_model()
    big.compile(build_optimizer(OptimizerConfig(name=name), 0.05), loss, run_eagerly=eager)
    big.fit(x, y, batch_size=n_acc * b, epochs=1, shuffle=False, verbose=0)

    start = _dense_model().get_weights()
    for wa, wb, w0 in zip(acc.get_weights(), big.get_weights(), start, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)
        assert not np.allclose(wa, w0)  # a real step was taken


def test_ema_weights_used_for_validation_and_kept_at_the_end() -> None:
    """With ``ema: true`` the runner adds ``keras.callbacks.SwapEMAWeights(swap_on_epoch=True)``:
    validation runs on the averaged weights, a checkpoint written after it at epoch end holds
    them, and fit leaves them in the model (``finalize_variable_values``)."""
    x, y = _data(64)
    xv, yv = _data(32, seed=2)
    model = _dense_model()
    m = 0.8
    model.compile(
        build_optimizer(OptimizerConfig(name="sgd", ema=True, ema_momentum=m), 0.2),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    raw_steps: list[list[np.ndarray]] = []
    saved: list[list[np.ndarray]] = []

    class Record(keras.callbacks.Callback):
        def __init__(self, steps: bool) -> None:
            super().__init__()
            self.steps = steps

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.steps:
                raw_steps.append([np.array(v) for v in self.model.trainable_weights])

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            saved.append([np.array(v) for v in self.model.trainable_weights])

    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    hist = model.fit(
        x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
        validation_data=(xv, yv), callbacks=[Record(True), swap, Record(False)],
    )  # fmt: skip
    # EMA as Keras defines it: the first average is the first updated weights, then
    # avg = m avg + (1 - m) w after every step.
    ema = [w.copy() for w in raw_steps[0]]
    emas = []
    n_per_epoch = 4
    for i, ws in enumerate(raw_steps[1:], start=1):
        ema = [m * a + (1 - m) * w for a, w in zip(ema, ws, strict=True)]
        if (i + 1) % n_per_epoch == 0:
            emas.append(ema)
    final = [np.array(v) for v in model.trainable_weights]
    for a, b in zip(final, ema, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(final[0], raw_steps[-1][0])
    # The callback after SwapEMAWeights sees the averages; the one before sees the raw weights.
    for epoch in range(2):
        np.testing.assert_allclose(saved[2 * epoch + 1][0], emas[epoch][0], rtol=1e-5)
        np.testing.assert_allclose(saved[2 * epoch][0], raw_steps[4 * epoch + 3][0], rtol=1e-6)
    # The logged validation loss of the last epoch is that of the EMA weights.
    val = model.evaluate(xv, yv, verbose=0)
    np.testing.assert_allclose(hist.history["val_loss"][-1], val, rtol=1e-5)


def test_ema_resume_from_a_backup_taken_after_the_swap(tmp_path: Path) -> None:
    """The runner backs up at epoch end *after* SwapEMAWeights (EMA weights in the model, raw
    weights in the optimizer's averages); a resumed run starts its SwapEMAWeights in the swapped
    state and then continues exactly like an uninterrupted run."""
    import tensorflow as tf

    x, y = _data(64)
    xv, yv = _data(32, seed=2)

    def fresh() -> keras.Model:
        model = _dense_model()
        model.compile(
            build_optimizer(OptimizerConfig(name="adam", ema=True, ema_momentum=0.7), 0.05),
            keras.losses.CategoricalCrossentropy(from_logits=True),
        )
        return model

    def fit(model: keras.Model, swap: keras.callbacks.Callback, start: int = 0, crash=False):
        return model.fit(
            x, y, batch_size=16, epochs=4, initial_epoch=start, shuffle=False, verbose=0,
            validation_data=(xv, yv), callbacks=[swap, Save(crash)],
        )  # fmt: skip

    class Save(keras.callbacks.Callback):
        """The runner's Backup, then a crash: the first run stops after its backup of epoch 1."""

        def __init__(self, crash: bool = False) -> None:
            super().__init__()
            self.crash = crash

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 1:
                ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
                ckpt.write(str(tmp_path / "backup"))
                self.model.stop_training = self.crash

    whole = fresh()
    h_whole = fit(whole, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))

    first = fresh()
    fit(first, keras.callbacks.SwapEMAWeights(swap_on_epoch=True), crash=True)
    resumed = fresh()
    resumed.optimizer.build(resumed.trainable_variables)
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).read(
        str(tmp_path / "backup")
    ).assert_existing_objects_matched()
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    swap._ema_weights_in_model = True  # the backup holds the swapped state
    h_resumed = fit(resumed, swap, start=2)
    np.testing.assert_allclose(
        h_resumed.history["val_loss"], h_whole.history["val_loss"][2:], rtol=1e-5
    )
    for a, b in zip(resumed.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["vit_ti_16", "resnet18", "densenet121"])
def test_decay_exclude_is_timms_parameter_groups(name: str) -> None:
    """``[bias, norm, embedding]`` skips exactly timm's no-decay group: every variable with
    ``ndim <= 1``, plus the ViT's class token and position embedding (``no_weight_decay()``)."""
    import kerasdl
    from kerasdl.training.optimizers import decay_excluded

    kw = {"patch_size": 8} if name.startswith("vit") else {}
    model = kerasdl.create_model(name, num_classes=10, input_shape=(32, 32, 3), **kw)
    skipped = {id(v) for v in decay_excluded(model, ["bias", "norm", "embedding"])}
    timm_rule = {
        id(v)
        for v in model.trainable_variables
        if len(v.shape) <= 1
        or v.path.rsplit("/", 1)[-1] in ("bias", "class_token", "pos_embedding")
    }
    assert skipped & {id(v) for v in model.trainable_variables} == timm_rule
    assert decay_excluded(model, []) == []


def test_decay_exclude_through_the_recipe_skips_those_variables() -> None:
    """compile_model applies training.optimizer.decay_exclude: with zero gradients, AdamW's
    decay shrinks the kernels and leaves biases and norm parameters alone."""
    from kerasdl.config import RecipeConfig
    from kerasdl.training.tasks import compile_model

    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="fc", bias_initializer="ones")(inputs)
    outputs = keras.layers.LayerNormalization(name="ln")(x)
    model = keras.Model(inputs, outputs)
    cfg = RecipeConfig.model_validate(
        {
            "training": {
                "optimizer": {
                    "name": "adamw",
                    "learning_rate": 0.1,
                    "weight_decay": 0.5,
                    "decay_exclude": ["bias", "norm"],
                },
                "steps_per_execution": 1,
            }
        }
    )
    compile_model(model, cfg, steps_per_epoch=1)
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    model.optimizer.apply_gradients(
        [(keras.ops.zeros_like(v), v) for v in model.trainable_variables]
    )
    for v in model.trainable_variables:
        moved = not np.allclose(v.numpy(), before[v.path])
        assert moved == (v.path == "fc/kernel"), v.path


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adamw", "rmsprop"])
def test_every_recipe_optimizer_takes_a_backbone_learning_rate(name: str) -> None:
    """training.optimizer.backbone_lr_multiplier works whatever optimizer class the recipe's
    name builds (FusedSGD for the SGD family)."""
    from kerasdl.training.transfer import transfer_optimizer

    opt = build_optimizer(OptimizerConfig(name=name, learning_rate=LR), LR)
    grouped = transfer_optimizer(opt, 0.1)
    assert isinstance(grouped, type(opt)) and grouped.default_multiplier == 0.1
    assert grouped.get_config()["learning_rate"] == opt.get_config()["learning_rate"]
