"""ViT: encoder block against a NumPy reference, patch embedding, position-embedding resizing,
exact parameter counts (built for the small variants, analytic for all, built for the large ones
under the slow marker)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kerasdl import create_model
from kerasdl.errors import UserError
from kerasdl.layers.patch_embed import (
    PatchEmbedding,
    resize_position_embeddings,
    sincos_position_embeddings,
)
from kerasdl.layers.transformer import TransformerEncoderBlock, encoder_block_params
from kerasdl.models.macs import count_macs
from kerasdl.models.vit import VisionTransformer, resize_vit, vit_param_count
from kerasdl.registry import get_entry

TORCHVISION_COUNTS = {
    "vit_b_16": 86_567_656,
    "vit_b_32": 88_224_232,
    "vit_l_16": 304_326_632,
    "vit_l_32": 306_535_400,
    "vit_h_14": 632_045_800,
}


def _layer_norm(x, gamma, beta, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_encoder_block_matches_numpy_reference():
    rng = np.random.default_rng(0)
    b, n, d, heads, m = 2, 5, 8, 2, 16
    block = TransformerEncoderBlock(heads, m)
    x = rng.normal(size=(b, n, d)).astype("float32")
    y = keras.ops.convert_to_numpy(block(x))
    # Non-trivial LayerNorm parameters so that they are exercised.
    for ln in (block.ln_1, block.ln_2):
        ln.gamma.assign(rng.normal(size=d) + 1.0)
        ln.beta.assign(rng.normal(size=d))
    y = keras.ops.convert_to_numpy(block(x))
    att = block.attention
    wq, bq = [keras.ops.convert_to_numpy(v) for v in att.query_dense.weights]  # (D, H, K), (H, K)
    wk, bk = [keras.ops.convert_to_numpy(v) for v in att.key_dense.weights]
    wv, bv = [keras.ops.convert_to_numpy(v) for v in att.value_dense.weights]
    wo, bo = [keras.ops.convert_to_numpy(v) for v in att.output_dense.weights]  # (H, K, D), (D,)
    g1, b1 = [keras.ops.convert_to_numpy(v) for v in block.ln_1.weights]
    g2, b2 = [keras.ops.convert_to_numpy(v) for v in block.ln_2.weights]
    w1, c1 = [keras.ops.convert_to_numpy(v) for v in block.mlp.fc1.weights]
    w2, c2 = [keras.ops.convert_to_numpy(v) for v in block.mlp.fc2.weights]
    h = _layer_norm(x, g1, b1)
    q = np.einsum("bnd,dhk->bhnk", h, wq) + bq[None, :, None]
    k = np.einsum("bnd,dhk->bhnk", h, wk) + bk[None, :, None]
    v = np.einsum("bnd,dhk->bhnk", h, wv) + bv[None, :, None]
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // heads)  # (B, H, N, N)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum("bhnk,hkd->bnd", a @ v, wo) + bo
    x1 = x + o
    ref = x1 + _gelu(_layer_norm(x1, g2, b2) @ w1 + c1) @ w2 + c2
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert block.count_params() == encoder_block_params(d, m)


def test_encoder_block_config_round_trip_and_drop_path():
    block = TransformerEncoderBlock(2, 16, dropout=0.1, attention_dropout=0.1, drop_path=0.5)
    x = np.random.default_rng(4).normal(size=(8, 3, 8)).astype("float32")
    block(x)
    clone = TransformerEncoderBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    # Inference is deterministic; training with drop-path 0.5 changes some samples.
    np.testing.assert_allclose(block(x, training=False), block(x, training=False))
    assert not np.allclose(block(x, training=True), block(x, training=False))


def test_patch_embedding_is_patchify_then_linear():
    rng = np.random.default_rng(1)
    layer = PatchEmbedding(6, 4, name="pe")
    img = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(img))
    assert out.shape == (2, 1 + 2 * 3, 6)
    kernel, bias = [keras.ops.convert_to_numpy(v) for v in layer.proj.weights]  # (4, 4, 3, 6)
    pos = keras.ops.convert_to_numpy(layer.pos_embedding)
    patches = img.reshape(2, 2, 4, 3, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 48)
    ref = patches @ kernel.reshape(48, 6) + bias + pos[:, 1:]
    np.testing.assert_allclose(out[:, 1:], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:, 0], np.broadcast_to(pos[0, 0], (2, 6)), atol=1e-6)


def test_sincos_embeddings_fixed_and_distinct():
    table = sincos_position_embeddings(16, (3, 3))
    assert table.shape == (1, 10, 16)
    np.testing.assert_array_equal(table[0, 0], 0.0)
    assert len({tuple(np.round(r, 6)) for r in table[0, 1:]}) == 9
    layer = PatchEmbedding(16, 2, position_embedding="sincos")
    layer(np.zeros((1, 6, 6, 3), "float32"))
    assert layer.pos_embedding.trainable is False
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.pos_embedding), table)


def test_resize_position_embeddings():
    rng = np.random.default_rng(2)
    pe = rng.normal(size=(1, 1 + 16, 4)).astype("float32")
    np.testing.assert_array_equal(resize_position_embeddings(pe, (4, 4), (4, 4)), pe)
    const = np.concatenate([pe[:, :1], np.full((1, 16, 4), 0.7, "float32")], axis=1)
    for method in ("bicubic", "bilinear"):
        out = resize_position_embeddings(const, (4, 4), (6, 8), interpolation=method)
        assert out.shape == (1, 1 + 48, 4)
        np.testing.assert_allclose(out[:, 1:], 0.7, atol=1e-5)  # constants stay constant
        np.testing.assert_array_equal(out[:, :1], pe[:, :1])  # class token untouched
    # Bilinear upsampling interpolates: it stays within the range of the field.
    yy, xx = np.meshgrid(np.linspace(0, 1, 4), np.linspace(0, 1, 4), indexing="ij")
    smooth = np.concatenate([np.zeros((1, 1, 1)), (yy + 2 * xx).reshape(1, 16, 1)], 1)
    up = resize_position_embeddings(smooth, (4, 4), (8, 8), interpolation="bilinear")
    assert up[0, 1:, 0].min() >= smooth[0, 1:, 0].min() - 1e-6
    assert up[0, 1:, 0].max() <= smooth[0, 1:, 0].max() + 1e-6
    with pytest.raises(ValueError, match="position embeddings"):
        resize_position_embeddings(pe, (3, 3), (4, 4))


def _tiny_vit(size: int, **kw) -> VisionTransformer:
    from tiny_models import tiny_vit

    return tiny_vit(size, 3, **{"patch_size": 8, **kw})


def test_resize_vit_and_load_time_interpolation(tmp_path):
    small = _tiny_vit(16)
    x = np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype("float32")
    same = resize_vit(small, (16, 16, 3))
    np.testing.assert_allclose(same(x), small(x), atol=1e-6)
    big = resize_vit(small, (32, 32, 3))
    pe = keras.ops.convert_to_numpy(small.get_layer("patch_embed").pos_embedding)
    expected = resize_position_embeddings(pe, (2, 2), (4, 4))
    got = keras.ops.convert_to_numpy(big.get_layer("patch_embed").pos_embedding)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert big(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 3)
    # The documented load path: weights saved at 16x16 loaded into a model built at 32x32.
    path = str(tmp_path / "small.weights.h5")
    small.save_weights(path)
    fresh = _tiny_vit(32)
    fresh.load_weights(path)
    for a, b in zip(fresh.weights, big.weights, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_any_dividing_patch_size_and_bad_patch():
    model = VisionTransformer(
        num_classes=5,
        input_shape=(24, 40, 3),
        patch_size=8,
        hidden_dim=8,
        num_layers=1,
        num_heads=2,
        mlp_dim=16,
        pool="avg",
    )
    assert model.get_layer("patch_embed").output.shape == (None, 1 + 3 * 5, 8)
    assert model(np.zeros((2, 24, 40, 3), "float32")).shape == (2, 5)
    with pytest.raises(UserError, match="patch_size=16 must divide"):
        create_model("vit_b_16", input_shape=(40, 40, 3))


def test_param_formula_matches_built_models():
    for kw in (dict(), dict(representation_size=12), dict(num_classes=0), dict(patch_size=4)):
        model = _tiny_vit(16, **kw)
        assert vit_param_count(**model.get_config()) == model.count_params()


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_torchvision_counts_analytic(name):
    entry = get_entry(name)
    assert vit_param_count(**entry.defaults) == TORCHVISION_COUNTS[name]


def test_deit_counts():
    assert vit_param_count(**get_entry("vit_ti_16").defaults) == pytest.approx(5.7e6, rel=0.01)
    assert vit_param_count(**get_entry("vit_s_16").defaults) == pytest.approx(22.1e6, rel=0.01)
    model = create_model("vit_ti_16")
    assert model.count_params() == vit_param_count(**get_entry("vit_ti_16").defaults)


def test_vit_b_16_built_count():
    model = create_model("vit_b_16")
    assert model.count_params() == TORCHVISION_COUNTS["vit_b_16"]
    assert model.output.shape == (None, 1000)
    assert count_macs(model) / 1e9 == pytest.approx(17.56, rel=0.02)  # torchvision's figure


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"])
def test_large_vit_built_counts(name):
    model = create_model(name)
    assert model.count_params() == TORCHVISION_COUNTS[name]


# ---------------------------------------------------------------------------------------------
# The MAE options (He et al. 2022): sin-cos positions, no class token, pooling, MAE's init


def reference_2d_sincos_pos_embed(embed_dim: int, grid_size: int, cls_token: bool) -> np.ndarray:
    """facebookresearch/mae ``util/pos_embed.py`` ``get_2d_sincos_pos_embed``, transcribed."""

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64)
        omega /= dim / 2.0
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # here w goes first
    grid = grid.reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


@pytest.mark.parametrize("dim,grid,cls", [(16, 3, True), (64, 4, True), (32, 5, False)])
def test_sincos_is_mae_get_2d_sincos_pos_embed(dim, grid, cls):
    want = reference_2d_sincos_pos_embed(dim, grid, cls)
    got = sincos_position_embeddings(dim, (grid, grid), int(cls))
    np.testing.assert_allclose(got[0], want, atol=1e-6)
    model = _tiny_vit(
        grid * 8,
        hidden_dim=dim,
        position_embedding="sincos",
        class_token=cls,
        pool="token" if cls else "avg",
    )
    table = keras.ops.convert_to_numpy(model.patch_embed.pos_embedding)
    np.testing.assert_allclose(table[0], want, atol=1e-6)
    assert not model.patch_embed.pos_embedding.trainable


@pytest.mark.parametrize(
    "kw",
    [
        dict(class_token=False, pool="avg"),
        dict(class_token=False, pool="none", num_classes=0),
        dict(pool="none", num_classes=0),
        dict(position_embedding="sincos", weight_init="mae"),
        dict(position_embedding="none", class_token=False, pool="avg"),
    ],
)
def test_mae_options_shapes_counts_and_round_trip(kw, tmp_path):
    model = _tiny_vit(16, **kw)
    x = np.random.default_rng(5).normal(size=(2, 16, 16, 3)).astype("float32")
    tokens = 4 + int(kw.get("class_token", True))
    want = (2, tokens, 16) if kw.get("pool") == "none" else (2, kw.get("num_classes", 3))
    assert tuple(model(x).shape) == want
    assert vit_param_count(**model.get_config()) == model.count_params()
    clone = VisionTransformer.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    model.save(tmp_path / "vit.keras")
    loaded = keras.saving.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    # the encoder on all patches in order is the model's own token sequence before pooling
    seq = keras.Model(model.input, model.get_layer("encoder_ln").output)(x)
    got = model.encode_tokens(model.patch_embed.patch_tokens(x))
    np.testing.assert_allclose(got, seq, atol=1e-5)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(class_token=False), "needs class_token"),
        (dict(pool="none"), "num_classes=0"),
        (dict(pool="cls"), "pool must be one of"),
        (dict(position_embedding="rope"), "position_embedding must be"),
        (dict(weight_init="jax"), "weight_init must be"),
        (dict(hidden_dim=18, num_heads=2, position_embedding="sincos"), "divisible by 4"),
    ],
)
def test_bad_mae_options_are_user_errors(kw, match):
    with pytest.raises(UserError, match=match):
        _tiny_vit(16, **kw)


def test_mae_weight_init_is_the_reference_init():
    """models_mae.py initialize_weights: xavier_uniform_ on every Linear (qkv fused as
    Linear(D, 3D)) and on the patch projection viewed as Linear(C p^2, D), zero Linear biases,
    class token N(0, 0.02); the registry default keeps torchvision's N(0, 1e-6) MLP biases."""
    keras.utils.set_random_seed(0)
    d, m = 64, 256
    model = _tiny_vit(32, hidden_dim=d, num_heads=4, mlp_dim=m, weight_init="mae")
    block = model.blocks[0]
    for fc in (block.mlp.fc1, block.mlp.fc2):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(fc.bias), 0.0)
    att = block.attention
    qkv = np.concatenate(
        [
            np.ravel(att.query_dense.kernel),
            np.ravel(att.key_dense.kernel),
            np.ravel(att.value_dense.kernel),
        ]
    )
    for w, limit in (
        (qkv, math.sqrt(6 / (d + 3 * d))),
        (np.ravel(att.output_dense.kernel), math.sqrt(6 / (2 * d))),
    ):
        assert np.abs(w).max() <= limit
        assert w.std() == pytest.approx(limit / math.sqrt(3), rel=0.1)  # uniform(-a, a)
    proj = np.ravel(model.patch_embed.proj.kernel)
    limit = math.sqrt(6 / (3 * 8 * 8 + d))
    assert np.abs(proj).max() <= limit and proj.std() == pytest.approx(
        limit / math.sqrt(3), rel=0.1
    )
    cls = np.ravel(model.patch_embed.cls_token)
    assert 0.01 < cls.std() < 0.03
    default = _tiny_vit(32, hidden_dim=d, num_heads=4, mlp_dim=m).blocks[0].mlp.fc1.bias
    assert 0 < np.abs(keras.ops.convert_to_numpy(default)).max() < 1e-5
    assert block.get_config()["weight_init"] == "mae"


def _outputs_and_grads(fn, x, variables):
    import tensorflow as tf

    w = tf.random.stateless_normal(fn(x).shape, seed=(7, 8))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(fn(x) * w)
    return fn(x), tape.gradient(loss, [x, *variables])


def test_mlp_fused_path_is_keras_dense_gelu_dense():
    import tensorflow as tf

    from kerasdl.layers.transformer import TransformerMLP

    x = tf.random.stateless_normal((2, 5, 8), seed=(1, 2)) * 2.0
    mlp = TransformerMLP(16, name="mlp")
    mlp(x)
    for v in mlp.weights:  # non-trivial biases
        v.assign(np.random.default_rng(0).normal(0, 0.5, v.shape))
    assert mlp._fused_ok(x, training=True)

    def keras_path(x):
        return mlp.fc2(mlp.act(mlp.fc1(x)))

    y0, g0 = _outputs_and_grads(keras_path, x, mlp.trainable_variables)
    y1, g1 = _outputs_and_grads(lambda x: mlp(x, training=True), x, mlp.trainable_variables)
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g0, g1, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    # Dropout in training, or another activation, runs Keras's layers.
    assert not TransformerMLP(16, dropout=0.1, name="m")._fused_ok(x, training=True)
    assert not TransformerMLP(16, activation="relu", name="m")._fused_ok(x, training=True)


def test_patch_embedding_gemm_path_is_the_convolution():
    import tensorflow as tf

    layer = PatchEmbedding(6, 4, name="pe")
    img = tf.random.stateless_normal((2, 8, 12, 3), seed=(3, 4))
    layer(img)
    layer.proj.bias.assign(np.random.default_rng(2).normal(size=6))
    assert layer._gemm_ok(img)
    variables = layer.proj.trainable_variables

    def conv_path(x):
        return tf.reshape(layer.proj(x), (2, 6, 6))

    y0, g0 = _outputs_and_grads(conv_path, img, variables)
    y1, g1 = _outputs_and_grads(layer._project_patches, img, variables)
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g0, g1, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
