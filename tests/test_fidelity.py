"""Fidelity to the reference implementations, each checked against the reference written in NumPy.

* He / Glorot re-initialization: the fans of ``torch.nn.init._calculate_fan_in_and_fan_out`` for
  the equivalent PyTorch weight (depthwise: ``fan_in = kh kw``).
* MAE: ``forward_loss`` (``norm_pix_loss`` with the unbiased variance) and ``random_masking``'s
  ``len_keep = int(L * (1 - mask_ratio))`` of facebookresearch/mae ``models_mae.py``.
* Mean Teacher: ``update_ema_variables`` of CuriousAI/mean-teacher ``pytorch/main.py``, called
  after ``global_step += 1`` (first decay 1/2).
* SGDR (``cosine_restarts``): peaks ``lr m_mul^i``, floor ``lr min_lr_ratio``.
* ``kerasdl schedule``: value ``k`` is the learning rate of the update made at iterations ``k``.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kerasdl.config import ScheduleConfig
from kerasdl.methods.losses import masked_patch_mse
from kerasdl.training.initializers import (
    apply_initializer,
    kernel_fans,
    kernel_owners,
    kernel_variables,
)
from kerasdl.training.schedules import build_schedule

# ---------------------------------------------------------------------------------------------
# 1. He / Glorot fans as torch.nn.init


def torch_fans(torch_shape: tuple[int, ...]) -> tuple[int, int]:
    """``torch.nn.init._calculate_fan_in_and_fan_out`` for a weight of ``torch_shape``."""
    receptive = math.prod(torch_shape[2:]) if len(torch_shape) > 2 else 1
    return torch_shape[1] * receptive, torch_shape[0] * receptive


def torch_shape_of(layer: keras.layers.Layer, path: str, shape: tuple[int, ...]) -> tuple:
    """The PyTorch weight shape of the same layer (``nn.Conv2d(groups=...)``, ``nn.Linear``)."""
    attr = path.rsplit("/", 1)[-1]
    if isinstance(layer, keras.layers.DepthwiseConv2D) or attr == "depthwise_kernel":
        kh, kw, c, mult = shape  # nn.Conv2d(c, c * mult, groups=c)
        return (c * mult, 1, kh, kw)
    if isinstance(layer, keras.layers.EinsumDense):
        if layer.name == "attention_output":  # (heads, head_dim, d): nn.Linear(h * dh, d)
            h, dh, d = shape
            return (d, h * dh)
        d, h, dh = shape  # query / key / value (d, heads, head_dim): nn.Linear(d, h * dh)
        return (h * dh, d)
    if len(shape) == 4:  # (kh, kw, c_in / groups, c_out): nn.Conv2d weight (c_out, c_in/g, kh, kw)
        kh, kw, cin_g, cout = shape
        return (cout, cin_g, kh, kw)
    return (shape[1], shape[0])  # Dense (in, out): nn.Linear weight (out, in)


def _zoo() -> keras.Model:
    inputs = keras.Input((8, 8, 64))
    x = keras.layers.DepthwiseConv2D(5, depth_multiplier=2, padding="same", name="dw")(inputs)
    x = keras.layers.SeparableConv2D(64, 3, depth_multiplier=4, padding="same", name="sep")(x)
    x = keras.layers.Conv2D(128, 3, groups=8, padding="same", name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(256, name="fc")(x)
    tokens = keras.layers.Reshape((4, 64))(x)
    x = keras.layers.MultiHeadAttention(4, 32, name="mha")(tokens, tokens)
    return keras.Model(inputs, x)


def test_kernel_fans_are_torch_fans() -> None:
    model = _zoo()
    owners = kernel_owners(model)
    kernels = kernel_variables(model)
    assert len(kernels) == 9  # dw, sep (2), grouped, fc, mha (q, k, v, out)
    for var in kernels:
        layer = owners[id(var)]
        shape = tuple(var.shape)
        want = torch_fans(torch_shape_of(layer, var.path, shape))
        assert kernel_fans(layer, var) == want, var.path
    dw = model.get_layer("dw")
    assert kernel_fans(dw, dw.kernel) == (25, 25 * 128)  # not Keras's (25 * 64, 25 * 2)


@pytest.mark.parametrize(
    "name,mode",
    [("he_normal", "fan_in"), ("he_uniform", "fan_out"), ("glorot_normal", "fan_in")],
)
def test_reinitialized_variance_uses_torch_fans(name: str, mode: str) -> None:
    model = _zoo()
    owners = kernel_owners(model)
    assert apply_initializer(model, name, mode, seed=0) == 9
    for var in kernel_variables(model):
        v = np.asarray(var, dtype="float64")
        fan_in, fan_out = torch_fans(torch_shape_of(owners[id(var)], var.path, tuple(v.shape)))
        if name.startswith("he"):  # He et al. 2015, eq. 10 / 14
            want = 2.0 / (fan_in if mode == "fan_in" else fan_out)
        else:  # Glorot & Bengio 2010, eq. 12
            want = 2.0 / (fan_in + fan_out)
        assert v.size >= 3000
        assert v.var() == pytest.approx(want, rel=0.12), var.path
        assert v.std() == pytest.approx(math.sqrt(want), rel=0.06), var.path


# ---------------------------------------------------------------------------------------------
# 2-3. MAE: forward_loss and random_masking of facebookresearch/mae


def reference_patchify(imgs_nchw: np.ndarray, p: int) -> np.ndarray:
    """``MaskedAutoencoderViT.patchify``: (N, 3, H, W) -> (N, L, p*p*3), einsum nchpwq->nhwpqc."""
    n, c, hh, ww = imgs_nchw.shape
    h, w = hh // p, ww // p
    x = imgs_nchw.reshape(n, c, h, p, w, p)
    x = np.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, h * w, p * p * c)


def reference_forward_loss(imgs_nchw, pred, mask, p: int, norm_pix_loss: bool) -> float:
    """``MaskedAutoencoderViT.forward_loss``; torch's ``var`` is unbiased by default."""
    target = reference_patchify(imgs_nchw, p)
    if norm_pix_loss:
        mean = target.mean(axis=-1, keepdims=True)
        var = target.var(axis=-1, ddof=1, keepdims=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = (pred - target) ** 2
    loss = loss.mean(axis=-1)
    return float((loss * mask).sum() / mask.sum())


def _mae(input_shape=(8, 8, 3), patch_size=2, mask_ratio=0.75, norm_pix_loss=False):
    from tiny_models import tiny_mae

    return tiny_mae(
        input_shape, patch_size=patch_size, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss
    )


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_is_reference_forward_loss(norm_pix: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 8, 8, 3)).astype("float32")  # NHWC; the reference takes NCHW
    pred = rng.normal(size=(3, 16, 12)).astype("float32")
    mask = (rng.uniform(size=(3, 16)) < 0.75).astype("float32")
    mask[:, 0] = 1.0
    want = reference_forward_loss(images.transpose(0, 3, 1, 2), pred, mask, 2, norm_pix)
    mae = _mae(norm_pix_loss=norm_pix)
    got = float(mae.reconstruction_loss(images, pred, mask))
    assert got == pytest.approx(want, rel=1e-5)


def test_norm_pix_target_uses_the_unbiased_variance() -> None:
    rng = np.random.default_rng(1)  # patches of 4 values: the unbiased variance is 4/3 larger
    target = rng.normal(size=(2, 5, 4)).astype("float32")
    pred, mask = rng.normal(size=(2, 5, 4)).astype("float32"), np.ones((2, 5), "float32")
    mean = target.mean(-1, keepdims=True)
    std = np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    want = (((pred - (target - mean) / std) ** 2).mean(-1) * mask).sum() / mask.sum()
    got = float(masked_patch_mse(pred, target, mask, norm_pix=True))
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("side,ratio", [(14, 0.5), (14, 0.75), (8, 0.6), (8, 0.75), (10, 0.9)])
def test_mae_keeps_reference_number_of_patches(side: int, ratio: float) -> None:
    length = (side // 2) ** 2
    len_keep = int(length * (1 - ratio))  # random_masking in models_mae.py
    mae = _mae(input_shape=(side, side, 1), mask_ratio=ratio)
    assert mae.num_patches == length
    assert mae.num_patches - mae.num_masked == len_keep
    _, mask = mae(np.zeros((2, side, side, 1), "float32"), training=False)
    np.testing.assert_array_equal(np.asarray(mask).sum(axis=1), [length - len_keep] * 2)


def test_mae_49_patches_half_masked_keeps_24() -> None:
    assert _mae(input_shape=(14, 14, 1), mask_ratio=0.5).num_masked == 25  # keeps 24, not 25


# ---------------------------------------------------------------------------------------------
# 4. Mean Teacher's EMA as the authors' PyTorch code


def test_mean_teacher_ema_follows_update_ema_variables() -> None:
    from kerasdl.methods.mean_teacher import MeanTeacher, mean_teacher_decay

    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="student")
    method = MeanTeacher(backbone, 3, consistency_weight=1.0, rampup_steps=3, seed=0)
    method.compile(keras.optimizers.SGD(0.5), run_eagerly=True)
    rng = np.random.default_rng(0)
    teacher = [w.astype("float64") for w in method.teacher.get_weights()]  # = student at start
    alpha_cfg = 0.999
    global_step = 0
    decays = []
    for _ in range(6):
        x_l = rng.normal(size=(4, 4)).astype("float32")
        y_l = np.eye(3, dtype="float32")[rng.integers(0, 3, 4)]
        u = rng.normal(size=(4, 4)).astype("float32")
        method.train_on_batch(((x_l, y_l), (u, u + 0.1)))
        # reference: optimizer.step(); global_step += 1; update_ema_variables(..., global_step)
        global_step += 1
        ema_decay = 0.99 if global_step <= 3 else alpha_cfg  # TF code's two phases
        alpha = min(1 - 1 / (global_step + 1), ema_decay)
        decays.append(alpha)
        student = method.backbone.get_weights()
        teacher = [alpha * t + (1 - alpha) * s for t, s in zip(teacher, student, strict=True)]
        for got, want in zip(method.teacher.get_weights(), teacher, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(decays, [1 / 2, 2 / 3, 3 / 4, 4 / 5, 5 / 6, 6 / 7])
    got = [float(mean_teacher_decay(t, 3, 0.999, 0.99)) for t in (1, 2, 3, 200, 5000)]
    np.testing.assert_allclose(got, [1 / 2, 2 / 3, 3 / 4, 200 / 201, 0.999], rtol=1e-6)
    assert float(mean_teacher_decay(150, 1000, 0.999, 0.99)) == pytest.approx(0.99)


# ---------------------------------------------------------------------------------------------
# 5. SGDR peaks and troughs


def sgdr_reference(t: int, t0: int, t_mul: float, m_mul: float, lr: float, ratio: float) -> float:
    """Loshchilov & Hutter 2017, eq. 5 with eta_max^i = lr m_mul^i, eta_min = ratio lr."""
    i, start = 0, 0
    while t >= start + t0 * t_mul**i:
        start += t0 * t_mul**i
        i += 1
    eta_min = ratio * lr
    eta_max = max(lr * m_mul**i, eta_min)
    phase = (t - start) / (t0 * t_mul**i)
    return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * phase))


def _lrs(cfg: ScheduleConfig, lr: float, spe: int, epochs: int) -> np.ndarray:
    sched = build_schedule(cfg, lr, spe, epochs)
    return np.asarray(sched(np.arange(spe * epochs, dtype="float32")), dtype="float64")


def test_cosine_restarts_peaks_and_troughs_with_m_mul_and_min_lr() -> None:
    cfg = ScheduleConfig(
        name="cosine_restarts", restart_epochs=1.0, t_mul=2.0, m_mul=0.5, min_lr_ratio=0.1
    )
    got = _lrs(cfg, 0.1, 10, 7)  # periods of 10, 20, 40 steps start at 0, 10, 30
    np.testing.assert_allclose(got[[0, 10, 30]], [0.1, 0.05, 0.025], rtol=1e-6)
    want = [sgdr_reference(t, 10, 2.0, 0.5, 0.1, 0.1) for t in range(70)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    # each period ends at the floor 0.01: the step before a restart is within a cosine tail of it
    for end, length, peak in ((9, 10, 0.1), (29, 20, 0.05), (69, 40, 0.025)):
        tail = 0.5 * (peak - 0.01) * (1 + math.cos(math.pi * (length - 1) / length))
        assert got[end] == pytest.approx(0.01 + tail, rel=1e-5)
        assert got[end] < 0.01 + 0.03 * (peak - 0.01)


@pytest.mark.parametrize(
    "t0,t_mul,m_mul,ratio", [(7, 3.0, 0.8, 0.05), (5, 1.0, 0.3, 0.2), (3, 2.0, 2.0, 0.0)]
)
def test_cosine_restarts_matches_sgdr_over_many_periods(t0, t_mul, m_mul, ratio) -> None:
    cfg = ScheduleConfig(
        name="cosine_restarts", restart_epochs=1.0, t_mul=t_mul, m_mul=m_mul, min_lr_ratio=ratio
    )
    epochs = 200 if t_mul == 1.0 else 400
    got = _lrs(cfg, 0.1, t0, epochs)
    want = [sgdr_reference(t, t0, t_mul, m_mul, 0.1, ratio) for t in range(t0 * epochs)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    assert got.min() >= ratio * 0.1 * (1 - 1e-6)  # the peak never sinks below the floor


# ---------------------------------------------------------------------------------------------
# 6. `kerasdl schedule` plots the learning rate of the update made at iterations = k


def test_schedule_command_value_k_is_the_lr_of_update_k() -> None:
    from kerasdl.commands.schedule import schedule_values

    sched = build_schedule(
        ScheduleConfig(name="cosine", warmup_epochs=1.0, min_lr_ratio=0.1), 0.1, 3, 3
    )
    used: dict[int, float] = {}

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            opt = self.model.optimizer
            used[int(opt.iterations.numpy())] = float(np.asarray(opt.learning_rate))

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(sched), "mse")
    x, y = np.zeros((6, 2), "float32"), np.zeros((6, 1), "float32")
    model.fit(x, y, batch_size=2, epochs=3, verbose=0, callbacks=[Record()])
    assert sorted(used) == list(range(9))
    np.testing.assert_allclose([used[k] for k in range(9)], schedule_values(sched, 9), rtol=1e-6)
