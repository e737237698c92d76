"""MAE around a registry ViT: the encoder on visible patches, masking, the reference loss, a short
fit, and the ``.keras`` round trip of the method and of the backbone the run keeps.

References: He et al. 2022; facebookresearch/mae ``models_mae.py`` (``random_masking``,
``forward_encoder``, ``forward_loss``).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from tiny_models import tiny_mae, tiny_vit

from kerasdl.errors import UserError
from kerasdl.methods.mae import MAE, random_masking
from kerasdl.models.vit import VisionTransformer


def _vit(class_token: bool = True, num_classes: int = 3, side: int = 8, **kw) -> VisionTransformer:
    return tiny_vit(
        side,
        num_classes=num_classes,
        class_token=class_token,
        pool="token" if class_token else "avg",
        position_embedding="sincos",
        weight_init="mae",
        **kw,
    )


def _mae(backbone=None, **kw) -> MAE:
    args = dict(decoder_dim=8, decoder_depth=1, decoder_heads=2, seed=0)
    return MAE(backbone if backbone is not None else _vit(), 3, **{**args, **kw})


def _images(n: int = 4, side: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, side, side, 1)).astype("float32")


def _np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("class_token", [True, False])
def test_encoder_on_visible_patches_is_the_backbones_blocks(class_token):
    vit = _vit(class_token)
    mae = _mae(vit)
    x = _images()
    prefix = int(class_token)
    # the backbone's own patch embedding output (class token first, positions added)
    embedded = _np(keras.Model(vit.input, vit.get_layer("patch_embed").output)(x))
    rng = np.random.default_rng(1)
    ids_keep = np.stack([rng.permutation(16)[:4] for _ in range(4)]).astype("int32")
    visible = np.take_along_axis(embedded[:, prefix:], ids_keep[..., None], axis=1)
    want = np.concatenate([embedded[:, :prefix], visible], axis=1)  # (B, prefix + 4, D)
    for block in vit.blocks:
        want = block(want)
    want = _np(vit.get_layer("encoder_ln")(want))
    got = _np(mae.encode_visible(x, ids_keep))
    assert got.shape == (4, prefix + 4, 16)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # every patch, shuffled: the backbone's token sequence, shuffled the same way (attention
    # is permutation-equivariant; positions are added before the gather)
    perm = np.stack([rng.permutation(16) for _ in range(4)]).astype("int32")
    seq = _np(keras.Model(vit.input, vit.get_layer("encoder_ln").output)(x))
    got = _np(mae.encode_visible(x, perm))
    np.testing.assert_allclose(got[:, :prefix], seq[:, :prefix], atol=1e-5)
    np.testing.assert_allclose(
        got[:, prefix:], np.take_along_axis(seq[:, prefix:], perm[..., None], 1), atol=1e-5
    )


@pytest.mark.parametrize("side,ratio", [(8, 0.75), (14, 0.5), (10, 0.9), (16, 0.6)])
def test_masking_keeps_int_l_times_one_minus_r(side, ratio):
    length = (side // 2) ** 2
    len_keep = int(length * (1 - ratio))  # random_masking in models_mae.py
    mae = _mae(_vit(side=side), mask_ratio=ratio)
    assert (mae.num_patches, mae.num_patches - mae.num_masked) == (length, len_keep)
    ids_keep, ids_restore, mask = (
        _np(t) for t in random_masking(3, length, mae.num_masked, keras.random.SeedGenerator(0))
    )
    assert ids_keep.shape == (3, len_keep)
    np.testing.assert_array_equal(mask.sum(1), [length - len_keep] * 3)
    np.testing.assert_array_equal(np.take_along_axis(mask, ids_keep, 1), 0.0)
    for row_keep, row_restore in zip(ids_keep, ids_restore, strict=True):
        assert len(set(row_keep)) == len_keep
        np.testing.assert_array_equal(np.sort(row_restore), np.arange(length))
    pred, mask = mae(np.zeros((2, side, side, 1), "float32"))
    assert pred.shape == (2, length, 4) and _np(mask).sum() == 2 * (length - len_keep)


def reference_forward_loss(imgs_nchw, pred, mask, p: int, norm_pix_loss: bool) -> float:
    """``MaskedAutoencoderViT.forward_loss`` (with its ``patchify``), NumPy; torch's ``var`` is
    unbiased."""
    n, c, hh, ww = imgs_nchw.shape
    h, w = hh // p, ww // p
    target = np.einsum("nchpwq->nhwpqc", imgs_nchw.reshape(n, c, h, p, w, p))
    target = target.reshape(n, h * w, p * p * c)
    if norm_pix_loss:
        mean = target.mean(axis=-1, keepdims=True)
        var = target.var(axis=-1, ddof=1, keepdims=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(axis=-1)
    return float((loss * mask).sum() / mask.sum())


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_of_the_forward_pass_is_reference_forward_loss(norm_pix):
    mae = _mae(norm_pix_loss=norm_pix)
    x = _images(3)
    pred, mask = mae(x)
    want = reference_forward_loss(x.transpose(0, 3, 1, 2), _np(pred), _np(mask), 2, norm_pix)
    assert float(mae.reconstruction_loss(x, pred, mask)) == pytest.approx(want, rel=1e-5)


def test_short_fit_reduces_the_loss_and_leaves_the_head_alone():
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    x = (load_digits().images[:256, ..., None] / 16.0).astype("float32")  # 8x8, 16 patches
    mae = _mae(_vit(num_classes=10), decoder_dim=16, decoder_depth=1)
    mae.compile(keras.optimizers.AdamW(3e-3, weight_decay=0.05, beta_2=0.95))
    head = [w.copy() for w in mae.backbone.get_layer("head").get_weights()]
    trained = {id(v) for v in mae.loss_variables}
    assert not trained & {id(v) for v in mae.backbone.get_layer("head").weights}
    loss = mae.fit(x, batch_size=64, epochs=12, verbose=0).history["loss"]  # one graph trace
    assert loss[-1] < 0.6 * loss[0], loss
    for a, b in zip(mae.backbone.get_layer("head").get_weights(), head, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("error:Skipping variable loading for optimizer")
def test_keras_round_trip_of_the_method_and_the_kept_backbone(tmp_path):
    mae = _mae(_vit(class_token=False), norm_pix_loss=True, mask_ratio=0.5)
    mae.compile(keras.optimizers.Adam(1e-2), run_eagerly=True)
    x = _images()
    mae.train_on_batch(x)
    mae.save(tmp_path / "mae.keras")
    loaded = keras.saving.load_model(tmp_path / "mae.keras")
    assert isinstance(loaded, MAE) and loaded.get_config() == mae.get_config()
    ids_keep = np.tile(np.arange(0, 16, 2, dtype="int32"), (4, 1))
    ids_restore = np.tile(np.argsort(np.r_[np.arange(0, 16, 2), np.arange(1, 16, 2)]), (4, 1))
    for m in (mae, loaded):
        assert m.inference_model is m.backbone
    latent = [_np(m.encode_visible(x, ids_keep)) for m in (mae, loaded)]
    np.testing.assert_allclose(latent[0], latent[1], atol=1e-6)
    pred = [_np(m.decode(latent[0], ids_restore.astype("int32"))) for m in (mae, loaded)]
    np.testing.assert_allclose(pred[0], pred[1], atol=1e-6)
    kept = mae.inference_model
    kept.save(tmp_path / "backbone.keras")
    back = keras.saving.load_model(tmp_path / "backbone.keras")
    assert type(back) is VisionTransformer and back.get_config() == kept.get_config()
    np.testing.assert_allclose(back(x), kept(x), atol=1e-6)


def test_old_construction_path_builds_the_reference_vit():
    mae = tiny_mae(pool="mean")
    vit = mae.backbone
    assert isinstance(vit, VisionTransformer)
    cfg = vit.get_config()
    assert (cfg["position_embedding"], cfg["weight_init"], cfg["pool"]) == ("sincos", "mae", "avg")
    assert (cfg["hidden_dim"], cfg["mlp_dim"], cfg["num_classes"]) == (8, 32, 0)
    assert set(mae.get_config()) == {
        "name",
        "backbone",
        "seed",
        "num_classes",
        "mask_ratio",
        "decoder_dim",
        "decoder_depth",
        "decoder_heads",
        "norm_pix_loss",
    }
    with pytest.raises(UserError, match="must be a registry Vision Transformer"):
        MAE(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()]))


def test_build_method_wraps_a_registry_vit_backbone():
    from kerasdl.methods import build_method

    vit = _vit()
    mae = build_method("mae", vit, 3, decoder_dim=8, decoder_depth=1, decoder_heads=2, seed=0)
    assert isinstance(mae, MAE) and mae.backbone is vit and mae.inference_model is vit


def test_a_recipe_mae_needs_a_vit_model():
    """``method: mae`` wraps the recipe's model; a non-ViT model is a one-line user error, not
    a ViT silently built in its place."""
    import kerasdl
    from kerasdl.methods import build_method

    cnn = kerasdl.create_model("simple_cnn", num_classes=0, input_shape=(8, 8, 1), filters=[4])
    with pytest.raises(UserError, match="must be a registry Vision Transformer"):
        build_method("mae", cnn, 3, decoder_dim=8, decoder_depth=1, decoder_heads=2)
