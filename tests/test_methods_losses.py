"""Formulas of the semi-/self-supervised methods against NumPy references and definitions."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_models import tiny_mae

import kerasdl
from kerasdl.data import ssl
from kerasdl.errors import UserError
from kerasdl.methods import build_method, validate_method
from kerasdl.methods.base import ema_update
from kerasdl.methods.fixmatch import FixMatchCosine, fixmatch_mask
from kerasdl.methods.losses import info_nce, masked_patch_mse, nt_xent, sigmoid_rampup, softmax_mse
from kerasdl.methods.mae import random_masking
from kerasdl.methods.mean_teacher import mean_teacher_decay
from kerasdl.methods.probes import knn_accuracy, linear_probe


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _tiny_cnn(num_classes=3):
    return kerasdl.create_model(
        "simple_cnn", num_classes=num_classes, input_shape=(8, 8, 1), filters=[4, 8]
    )


def test_nt_xent_matches_numpy_reference():
    rng = np.random.default_rng(0)
    z1, z2, tau = rng.normal(size=(5, 7)), rng.normal(size=(5, 7)), 0.3
    z = _unit(np.concatenate([z1, z2]))
    n2 = len(z)
    losses = []
    for i in range(n2):  # loop form of equation (1) in Chen et al. 2020
        pos = (i + 5) % n2
        denom = sum(np.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        losses.append(-np.log(np.exp(z[i] @ z[pos] / tau) / denom))
    loss, _, labels = nt_xent(z1.astype("float32"), z2.astype("float32"), tau)
    np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(labels), [5, 6, 7, 8, 9, 0, 1, 2, 3, 4])


def test_info_nce_matches_numpy_reference_with_positive_first():
    rng = np.random.default_rng(1)
    q, k, queue, tau = (
        rng.normal(size=(4, 6)),
        rng.normal(size=(4, 6)),
        rng.normal(size=(9, 6)),
        0.2,
    )
    queue = _unit(queue)
    qn, kn = _unit(q), _unit(k)
    logits = np.concatenate([(qn * kn).sum(1, keepdims=True), qn @ queue.T], 1) / tau
    ref = -np.log(_softmax(logits)[:, 0]).mean()
    loss, got_logits = info_nce(*(a.astype("float32") for a in (q, k, queue)), tau)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got_logits), logits, rtol=1e-4, atol=1e-5)


def test_softmax_mse_and_rampup():
    a, b = np.array([[1.0, 2.0, 0.5]]), np.array([[0.0, 1.0, 3.0]])
    ref = ((_softmax(a) - _softmax(b)) ** 2).mean(-1)
    np.testing.assert_allclose(np.asarray(softmax_mse(a, b)), ref, rtol=1e-5)
    for step in (0, 25, 100, 150):
        t = min(step / 100, 1.0)
        np.testing.assert_allclose(float(sigmoid_rampup(step, 100)), np.exp(-5 * (1 - t) ** 2))


def test_fixmatch_mask_follows_threshold():
    probs = np.array([[0.96, 0.02, 0.02], [0.94, 0.03, 0.03], [0.1, 0.85, 0.05]])
    pseudo, mask = fixmatch_mask(np.log(probs), 0.95)
    np.testing.assert_array_equal(np.asarray(mask), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(pseudo), [0, 0, 1])
    _, mask = fixmatch_mask(np.log(probs), 0.8)
    np.testing.assert_array_equal(np.asarray(mask), [1.0, 1.0, 1.0])
    sched = FixMatchCosine(0.03, 100)
    np.testing.assert_allclose(float(sched(50)), 0.03 * np.cos(7 * np.pi * 50 / 1600), rtol=1e-6)


def test_ema_update_is_the_ema_formula():
    student, teacher = _tiny_cnn(), _tiny_cnn()
    before = [w.copy() for w in teacher.get_weights()]
    ema_update(teacher, student, 0.9)
    for t, s, b in zip(teacher.get_weights(), student.get_weights(), before, strict=True):
        np.testing.assert_allclose(t, 0.9 * b + 0.1 * s, rtol=1e-5, atol=1e-7)
    # Mean Teacher's decay: min(1 - 1/(t+1), 0.99 during ramp-up, 0.999 after)
    assert float(mean_teacher_decay(0, 10, 0.999, 0.99)) == 0.0
    np.testing.assert_allclose(float(mean_teacher_decay(5, 10, 0.999, 0.99)), 1 - 1 / 6)
    np.testing.assert_allclose(float(mean_teacher_decay(500, 10, 0.999, 0.99)), 1 - 1 / 501)
    np.testing.assert_allclose(float(mean_teacher_decay(5000, 10, 0.999, 0.99)), 0.999)
    np.testing.assert_allclose(float(mean_teacher_decay(5000, 10**6, 0.999, 0.99)), 0.99)


def test_mean_teacher_step_updates_teacher_by_ema():
    method = build_method("mean_teacher", _tiny_cnn(), 3, rampup_steps=0, seed=0)
    method.compile(keras.optimizers.SGD(0.1))
    method.optimizer.iterations.assign(1000)  # past ramp-up: decay = min(1 - 1/1001, 0.999)
    teacher0 = [w.copy() for w in method.teacher.get_weights()]
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    method.train_on_batch(((x, y), (x, x)))
    d = min(1 - 1 / 1001, 0.999)
    pairs = zip(method.teacher.get_weights(), method.backbone.get_weights(), teacher0, strict=True)
    for t, s, b in pairs:
        np.testing.assert_allclose(t, d * b + (1 - d) * s, rtol=1e-4, atol=1e-6)


def test_moco_queue_is_fifo_with_fixed_size():
    net = kerasdl.create_model("simple_cnn", num_classes=0, input_shape=(8, 8, 1), filters=[4])
    moco = build_method("moco", net, 0, queue_size=5, projection_dim=3, seed=0)
    assert tuple(moco.queue.shape) == (5, 3)
    # the key encoder's batch norm uses batch statistics but is not optimized
    bn = moco.key_backbone.get_layer("stage0_norm0")
    assert bn.trainable and not moco.key_backbone.get_layer("stage0_conv0").trainable
    n_query = len(moco.backbone.trainable_variables) + len(moco.projector.trainable_variables)
    assert len(moco.trainable_variables) == n_query
    old = moco.queue.numpy().copy()
    k1 = np.arange(9, dtype="float32").reshape(3, 3)
    moco.enqueue(tf.constant(k1))
    q = moco.queue.numpy()
    np.testing.assert_array_equal(q[:3], k1)  # newest written over the oldest entries
    np.testing.assert_array_equal(q[3:], old[3:])
    assert int(moco.queue_ptr.numpy()) == 3
    k2 = -np.arange(1, 10, dtype="float32").reshape(3, 3)
    moco.enqueue(tf.constant(k2))  # wraps around: rows 3, 4, then 0
    q = moco.queue.numpy()
    np.testing.assert_array_equal(q[3:], k2[:2])
    np.testing.assert_array_equal(q[0], k2[2])
    np.testing.assert_array_equal(q[1:3], k1[1:])
    assert int(moco.queue_ptr.numpy()) == 1 and q.shape == (5, 3)


def test_mae_masks_exact_count_and_loss_ignores_visible_patches():
    ids_keep, ids_restore, mask = random_masking(6, 16, round(0.75 * 16), 0)
    mask = np.asarray(mask)
    np.testing.assert_array_equal(mask.sum(1), [12] * 6)
    for row_keep, row_mask in zip(np.asarray(ids_keep), mask, strict=True):
        assert set(row_keep) == set(np.flatnonzero(row_mask == 0))
    assert len({tuple(r) for r in mask}) > 1  # a different mask per image
    mae = tiny_mae(mask_ratio=0.6)
    assert mae.num_masked == round(0.6 * 16)
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(6, 16, 4)), rng.normal(size=(6, 16, 4))
    base = float(masked_patch_mse(pred, target, mask))
    changed = pred + 100.0 * (1 - mask)[..., None]  # only visible patches change
    np.testing.assert_allclose(float(masked_patch_mse(changed, target, mask)), base, rtol=1e-6)
    ref = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    np.testing.assert_allclose(base, ref, rtol=1e-5)
    assert float(masked_patch_mse(pred + (mask[..., None]), target, mask)) != base


def test_split_labelled_is_stratified_and_seeded():
    y = np.repeat(np.arange(4), 20)
    x = np.arange(80, dtype="float32").reshape(80, 1, 1, 1)
    lab, unl = ssl.split_labelled((x, y), 3, seed=1)
    xs, ys = zip(*lab.as_numpy_iterator(), strict=True)
    assert np.bincount(ys).tolist() == [3, 3, 3, 3]
    assert all(int(a.ravel()[0]) // 20 == b for a, b in zip(xs, ys, strict=True))
    again, _ = ssl.split_labelled((x, y), 3, seed=1)
    other, rest = ssl.split_labelled((x, y), 3, seed=2, unlabelled="rest")
    assert [a.item() for a, _ in again.as_numpy_iterator()] == [a.item() for a in xs]
    assert [a.item() for a, _ in other.as_numpy_iterator()] != [a.item() for a in xs]
    assert len(list(unl)) == 80 and len(list(rest)) == 68
    with pytest.raises(UserError, match="only 20"):
        ssl.split_labelled((x, y), 21)


def test_semi_supervised_batches_and_views():
    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype("float32")
    y = np.repeat(np.arange(4), 10)
    lab, unl = ssl.split_labelled((x, y), 2, seed=0)
    ds = ssl.semi_supervised_dataset(lab, unl, 4, 4, mu=3, views="two_weak", flip=False)
    batches = list(ds)
    assert len(batches) == 40 // 12  # one pass over the unlabelled images
    (xl, yl), (u1, u2) = batches[0]
    assert xl.shape == (4, 8, 8, 1) and yl.shape == (4, 4) and u1.shape == u2.shape == (12, 8, 8, 1)
    assert not np.allclose(u1.numpy(), u2.numpy())
    strong = ssl.build_view("fixmatch_strong", flip=False)(tf.constant(x[0]))  # RA + Cutout
    assert strong.shape == (8, 8, 1)
    assert float(tf.reduce_min(strong)) >= 0.0 and float(tf.reduce_max(strong)) <= 1.0
    cutout = [{"name": "cutout", "size": [0.0, 1.0], "fill": 0.5}]
    cut = ssl.build_view(cutout)(tf.ones((16, 16, 1)))
    grey = int(tf.reduce_sum(tf.cast(cut == 0.5, tf.int32)))
    rows = tf.reduce_any(cut[..., 0] == 0.5, axis=1)
    side = int(tf.reduce_sum(tf.cast(rows, tf.int32)))
    assert grey == side * int(
        tf.reduce_sum(tf.cast(tf.reduce_any(cut[..., 0] == 0.5, 0), tf.int32))
    )
    v1, v2 = next(iter(ssl.contrastive_dataset(unl, 8, blur_prob=0.5)))
    assert v1.shape == (8, 8, 8, 1) and not np.allclose(v1.numpy(), v2.numpy())


def test_probes_on_separable_features():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 5)) * 5
    ytr, yte = np.repeat(np.arange(3), 10), np.repeat(np.arange(3), 5)
    ftr = centers[ytr] + rng.normal(size=(30, 5))
    fte = centers[yte] + rng.normal(size=(15, 5))
    assert linear_probe(ftr, ytr, fte, yte) == 1.0
    assert knn_accuracy(ftr, ytr, fte, yte, k=5) == 1.0
    assert knn_accuracy(ftr, ytr, fte, (yte + 1) % 3, k=5) == 0.0


def test_method_params_are_validated():
    assert validate_method({"name": "fixmatch"}).threshold == 0.95
    with pytest.raises(UserError, match="method.threshold"):
        validate_method({"name": "fixmatch", "threshold": 1.5})
    with pytest.raises(UserError, match="method.tau"):
        validate_method({"name": "fixmatch", "tau": 0.9})
    with pytest.raises(UserError, match="Unknown method 'fixmatsh'"):
        validate_method({"name": "fixmatsh"})
