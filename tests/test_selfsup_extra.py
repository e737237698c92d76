"""MoCo's batch-normalized heads (MoCo v3 option) and the self-supervised digits benchmark."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasdl.methods import MoCo
from kerasdl.methods.simclr import projection_head
from kerasdl.models.vit import VisionTransformer


def _vit():
    return VisionTransformer(0, (8, 8, 1), 4, 8, 1, 2, 32, pool="avg", position_embedding="sincos")


def _views(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1)).astype("float32")
    return x, x[::-1].copy()


def test_batch_norm_head_is_moco_v3_mlp():
    head = projection_head(5, 7, 3, "h", batch_norm=True)
    kinds = [type(layer).__name__ for layer in head.layers]
    assert kinds == ["Dense", "BatchNormalization", "ReLU", "Dense", "BatchNormalization"]
    assert not head.layers[0].use_bias and not head.layers[3].use_bias
    last = head.layers[-1]
    assert not last.center and not last.scale and last.momentum == 0.9 and last.epsilon == 1e-5
    # 5*7 + 4*7 (gamma, beta, moving mean/var) + 7*3 + 2*3 (moving mean/var)
    assert head.count_params() == 35 + 28 + 21 + 6
    z = head(np.random.default_rng(0).normal(3.0, 1.0, (16, 5)), training=True)
    np.testing.assert_allclose(np.mean(z, 0), 0.0, atol=1e-5)  # batch statistics: centred


def test_moco_key_head_uses_batch_statistics_and_stays_out_of_the_optimizer():
    moco = MoCo(_vit(), projection_dim=4, queue_size=8, head_batch_norm=True, seed=0)
    x, _ = _views()
    # un-normalized key projections of a batch are centred: the key head's BN used batch
    # statistics (with its initial moving statistics, mean 0 / variance 1, they would not be)
    z = moco.key_projector(moco.key_encoder(x, training=True), training=True)
    np.testing.assert_allclose(np.mean(z, 0), 0.0, atol=1e-5)
    assert np.abs(np.mean(moco.key_projector(moco.key_encoder(x), training=False), 0)).max() > 1e-3
    key = {id(w) for w in [*moco.key_backbone.weights, *moco.key_projector.weights]}
    assert not key & {id(w) for w in moco.trainable_variables}
    n_query = len(moco.backbone.trainable_variables) + len(moco.projector.trainable_variables)
    assert len(moco.trainable_variables) == n_query


def test_moco_momentum_update_with_batch_norm_head():
    moco = MoCo(_vit(), projection_dim=4, queue_size=8, momentum=0.5, head_batch_norm=True)
    moco.compile(keras.optimizers.SGD(0.5), run_eagerly=True)
    q0 = [w.numpy().copy() for w in moco.projector.trainable_weights]
    k0 = [w.numpy().copy() for w in moco.key_projector.layers[0].weights]
    np.testing.assert_array_equal(k0[0], q0[0])  # the key encoder starts as a copy
    moco.train_on_batch(_views())
    q1 = [w.numpy() for w in moco.projector.trainable_weights]
    assert not np.allclose(q1[0], q0[0])
    got = moco.key_projector.layers[0].kernel.numpy()
    np.testing.assert_allclose(got, 0.5 * q0[0] + 0.5 * q1[0], rtol=1e-5, atol=1e-6)


def test_moco_batch_norm_head_under_mixed_bfloat16():
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        moco = MoCo(_vit(), projection_dim=4, queue_size=8, head_batch_norm=True, seed=0)
        moco.compile(keras.optimizers.Adam(1e-2), run_eagerly=True)
        logs = moco.train_on_batch(_views(), return_dict=True)
    finally:
        keras.config.set_dtype_policy(old)
    assert (
        np.isfinite(logs["loss"]) and moco.projector.layers[1].dtype_policy.name == "mixed_bfloat16"
    )
    assert moco.queue.dtype == "float32"


def test_moco_batch_norm_head_round_trips(tmp_path):
    moco = MoCo(_vit(), projection_dim=4, queue_size=8, head_batch_norm=True, seed=0)
    assert moco.get_config()["head_batch_norm"] is True
    moco.save(tmp_path / "moco.keras")
    loaded = keras.saving.load_model(tmp_path / "moco.keras")
    assert loaded.head_batch_norm and len(loaded.projector.layers) == 5
    x, _ = _views()
    np.testing.assert_allclose(loaded(x), moco(x), atol=1e-5)


@pytest.mark.slow  # three methods traced and probed: minutes on 2 cores
def test_ssl_benchmark_smoke(tmp_path, capsys):
    """The benchmark end to end with a few steps: every row of the table, one PNG."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ssl_digits

    png = tmp_path / "mae.png"
    args = ["--steps", "2", "--mae-steps", "2", "--batch-size", "32", "--mae-png", str(png)]
    assert ssl_digits.main(args) == 0
    out = capsys.readouterr().out
    for row in ("| random init |", "| simclr |", "| moco |", "| mae |"):
        assert row in out
    assert png.stat().st_size > 1000
