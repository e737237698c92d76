"""Masked autoencoder (MAE): reconstruct randomly masked image patches from the visible ones.

MAE wraps a registry :class:`~kerasdl.models.vit.VisionTransformer` (the recipe's ``model:``).
The image is cut into ``p x p`` patches and a random 75% of them are removed per image. The
encoder is the backbone itself, its patch embedding, blocks and final LayerNorm run on the
visible patches only (:meth:`VisionTransformer.encode_tokens`). A light decoder of MAE's own gets
the encoded visible tokens plus a shared learned mask token at every removed position (with
fixed sine-cosine position embeddings of its own width), and predicts the pixels of every patch.
The loss is the mean squared error on the removed patches only, optionally against per-patch
normalized pixels. After pretraining, what the run keeps (:attr:`MAE.inference_model`) is the
backbone, a registry ViT with its own head, so probes, export and ``kerasdl evaluate`` take it
like any classifier.

For the reference's encoder, build the backbone with ``position_embedding="sincos"`` and
``weight_init="mae"`` (fixed 2-D sine-cosine positions with the class token's zero row,
Xavier-uniform weights, zero biases).

Reference:
    He, Chen, Xie, Li, Dollar & Girshick, "Masked Autoencoders Are Scalable Vision Learners",
    CVPR 2022, and its code, facebookresearch/mae ``models_mae.py`` (``random_masking``,
    ``forward_encoder``, ``forward_decoder``, ``forward_loss``) and ``util/pos_embed.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasdl.errors import UserError
from kerasdl.layers.patch_embed import patchify, sincos_position_embeddings, unpatchify
from kerasdl.layers.transformer import LN_EPSILON, TransformerEncoderBlock
from kerasdl.methods.base import MethodModel, strip_empty
from kerasdl.methods.losses import masked_patch_mse, patch_norm_stats
from kerasdl.models.base import HEAD
from kerasdl.models.vit import VisionTransformer

# Arguments of the old construction path, MAE(None, input_shape=..., patch_size=..., dim=...),
# which builds the reference's ViT itself (see mae_vit); ignored when a backbone is given.
_OWN_ENCODER_ARGS = ("input_shape", "patch_size", "dim", "depth", "num_heads", "mlp_ratio", "pool")


def mae_vit(
    input_shape: tuple[int, int, int] | list[int],
    patch_size: int = 16,
    dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    pool: str = "cls",
    num_classes: int = 0,
    name: str = "encoder",
) -> VisionTransformer:
    """The encoder of the MAE reference code as a registry :class:`VisionTransformer`.

    Class token, fixed 2-D sine-cosine positions, the reference initialisation; ``pool`` is
    ``"cls"`` (class token) or ``"mean"`` (patch tokens). ``mae_vit((224, 224, 3))`` is
    ``mae_vit_base_patch16``'s encoder.
    """
    return VisionTransformer(
        num_classes,
        input_shape,
        patch_size,
        dim,
        depth,
        num_heads,
        int(round(dim * mlp_ratio)),
        pool={"cls": "token", "mean": "avg"}.get(pool, pool),
        position_embedding="sincos",
        weight_init="mae",
        name=name,
    )


def random_masking(batch: int, num_patches: int, num_masked: int, seed):
    """Per-image random patch masks (MAE's ``random_masking``, by sorting uniform noise).

    Returns:
        ``(ids_keep, ids_restore, mask)``: ``(B, N - M)`` indices of the visible patches,
        ``(B, N)`` the inverse permutation, and ``(B, N)`` 1 = removed, 0 = visible.
    """
    noise = keras.random.uniform((batch, num_patches), seed=seed)
    ids_shuffle = ops.argsort(noise, axis=1)  # ascending: small is kept, large is removed
    ids_restore = ops.argsort(ids_shuffle, axis=1)
    ids_keep = ids_shuffle[:, : num_patches - num_masked]
    keep = ops.concatenate(
        [ops.zeros((batch, num_patches - num_masked)), ops.ones((batch, num_masked))], axis=1
    )
    mask = ops.take_along_axis(keep, ids_restore, axis=1)
    return ids_keep, ids_restore, mask


@keras.saving.register_keras_serializable(package="kerasdl")
class MAE(MethodModel):
    """Masked-autoencoder pretraining of a registry Vision Transformer.

    Args:
        backbone: the :class:`~kerasdl.models.vit.VisionTransformer` to pretrain (any
            ``class_token`` / ``position_embedding`` / ``pool``; the reference's encoder is
            ``position_embedding="sincos", weight_init="mae"``). ``None``: the old construction
            path, a ViT built by :func:`mae_vit` from ``input_shape``, ``patch_size``, ``dim``,
            ``depth``, ``num_heads``, ``mlp_ratio`` and ``pool`` passed as keywords.
        num_classes: the data's classes, as every method is called; MAE trains no head. The
            backbone keeps its own (untrained) head; only a ViT built here (``backbone=None``)
            gets one of ``num_classes`` outputs.
        mask_ratio: fraction of patches removed per image (0.75); ``int(N (1 - mask_ratio))``
            patches stay visible, as in the reference ``random_masking``.
        decoder_dim: decoder width (512).
        decoder_depth: decoder blocks (8).
        decoder_heads: decoder attention heads (16).
        norm_pix_loss: reconstruct per-patch normalized pixels (mean and unbiased variance, as
            ``forward_loss``; improves representations in the paper, off by default as in the
            reference code).
        seed: seed of the masking.

    The decoder blocks are :class:`~kerasdl.layers.transformer.TransformerEncoderBlock` with the
    reference initialisation and the encoder's MLP ratio (``mlp_dim / hidden_dim``).

    Call arguments:
        inputs: images ``(B, H, W, C)``.
        training: whether the layers run in training mode.

    ``call`` returns ``(pred, mask)``: ``(B, N, p*p*C)`` predicted patches and the ``(B, N)``
    mask. Training and validation data: image batches (``x`` or ``(x, y)``, labels ignored); see
    ``kerasdl.data.ssl.masked_image_dataset``. Logged: ``loss`` (masked-patch MSE).

    Example:
        >>> vit = kerasdl.create_model("vit_ti_16", num_classes=10, input_shape=(32, 32, 3),
        ...                            patch_size=4, position_embedding="sincos", weight_init="mae")
        >>> method = MAE(vit, 10, decoder_dim=128, decoder_depth=2, decoder_heads=4)
        >>> method.compile(keras.optimizers.AdamW(1.5e-4, weight_decay=0.05, beta_2=0.95))

    Reference:
        He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (section 3; mask
        ratio 0.75, decoder 8 x 512, loss on masked patches); facebookresearch/mae
        ``models_mae.py`` ``MaskedAutoencoderViT``.
    """

    def __init__(
        self,
        backbone: VisionTransformer | None = None,
        num_classes: int = 0,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        norm_pix_loss: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        own = {k: kwargs.pop(k) for k in _OWN_ENCODER_ARGS if k in kwargs}
        if backbone is None:
            if "input_shape" not in own:
                raise ValueError("MAE needs a VisionTransformer backbone (or an input_shape).")
            backbone = mae_vit(num_classes=num_classes, **own)
        if not isinstance(backbone, VisionTransformer):
            raise UserError(
                "method mae: the model must be a registry Vision Transformer (vit_*, e.g. "
                f"vit_ti_16 resized with patch_size / hidden_dim). Received: {backbone.name!r} "
                f"({type(backbone).__name__})"
            )
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1). Received: {mask_ratio}")
        if decoder_dim % 4 or decoder_dim % decoder_heads:
            raise ValueError(
                "decoder_dim must be divisible by 4 (sine-cosine positions) and by decoder_heads. "
                f"Received: decoder_dim={decoder_dim}, decoder_heads={decoder_heads}"
            )
        super().__init__(backbone, seed=seed, **kwargs)
        h, w, c = backbone.input_shape_
        p = backbone.patch_size
        grid = (h // p, w // p)
        self.num_patches = grid[0] * grid[1]
        # random_masking of facebookresearch/mae keeps int(L * (1 - mask_ratio)) patches
        self.num_masked = self.num_patches - int(self.num_patches * (1 - mask_ratio))
        if not 0 < self.num_masked < self.num_patches:
            raise ValueError(
                f"mask_ratio {mask_ratio} leaves no visible or no masked patch of "
                f"{self.num_patches}."
            )
        self.num_classes = int(num_classes)
        self.mask_ratio = float(mask_ratio)
        self.decoder_dim = int(decoder_dim)
        self.decoder_depth = int(decoder_depth)
        self.decoder_heads = int(decoder_heads)
        self.norm_pix_loss = bool(norm_pix_loss)
        prefix = backbone.num_prefix_tokens
        decoder_mlp = int(round(self.decoder_dim * backbone.mlp_dim / backbone.hidden_dim))
        self.decoder_embed = keras.layers.Dense(self.decoder_dim, name="decoder_embed")
        self.mask_token = self.add_weight(
            shape=(1, 1, self.decoder_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="mask_token",
        )
        self.decoder_pos_embed = self.add_weight(  # fixed, the class token's row zero
            shape=(1, prefix + self.num_patches, self.decoder_dim),
            initializer=keras.initializers.Constant(
                sincos_position_embeddings(self.decoder_dim, grid, prefix)
            ),
            trainable=False,
            name="decoder_pos_embed",
        )
        self.decoder_blocks = [
            TransformerEncoderBlock(
                self.decoder_heads, decoder_mlp, weight_init="mae", name=f"decoder_block_{i}"
            )
            for i in range(self.decoder_depth)
        ]
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="decoder_norm")
        self.decoder_pred = keras.layers.Dense(p * p * c, name="decoder_pred")
        tokens = (None, prefix + self.num_patches)
        self.decoder_embed.build((*tokens, backbone.hidden_dim))
        for blk in self.decoder_blocks:
            blk.build((*tokens, self.decoder_dim))
        self.decoder_norm.build((*tokens, self.decoder_dim))
        self.decoder_pred.build((*tokens, self.decoder_dim))
        self._make_trackers(["loss"])
        self._finish_build()

    @property
    def inference_model(self) -> keras.Model:
        """The backbone: the registry ViT, with its own head."""
        return self.backbone

    @property
    def loss_variables(self) -> list:
        """What the loss depends on: every trainable variable except the backbone's head (and
        its ``representation_size`` pre-logits layer), which the reconstruction does not reach
        (Keras would warn about each)."""
        skip = set()
        for name in (HEAD, "pre_logits_fc"):
            if any(layer.name == name for layer in self.backbone.layers):
                skip |= {id(v) for v in self.backbone.get_layer(name).weights}
        return [v for v in self.trainable_variables if id(v) not in skip]

    def encode_visible(self, images, ids_keep, training=None):
        """The encoder on the visible patches: ``(B, prefix + N - M, D)`` (``forward_encoder``).

        The backbone's patch embedding (with its position embedding) of every patch, the visible
        ones gathered by ``ids_keep`` ``(B, N - M)``, then its class token, blocks and final
        LayerNorm (:meth:`VisionTransformer.encode_tokens`).
        """
        tokens = self.backbone.patch_embed.patch_tokens(images)  # (B, N, D)
        visible = ops.take_along_axis(tokens, ops.expand_dims(ids_keep, -1), axis=1)
        return self.backbone.encode_tokens(visible, training=training)  # (B, prefix + N - M, D)

    def decode(self, latent, ids_restore, training=None):
        """Decoder: visible latents + mask tokens in image order -> ``(B, N, p*p*C)`` pixels
        (``forward_decoder``)."""
        prefix = self.backbone.num_prefix_tokens
        x = self.decoder_embed(latent)  # (B, prefix + N - M, Dd)
        b = ops.shape(x)[0]
        mask_tokens = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype), (b, self.num_masked, self.decoder_dim)
        )
        patches = ops.concatenate([x[:, prefix:], mask_tokens], axis=1)  # (B, N, Dd), shuffled
        patches = ops.take_along_axis(patches, ops.expand_dims(ids_restore, -1), axis=1)
        x = ops.concatenate([x[:, :prefix], patches], axis=1)  # (B, prefix + N, Dd)
        x = x + ops.cast(self.decoder_pos_embed, x.dtype)
        for blk in self.decoder_blocks:
            x = blk(x, training=training)
        return self.decoder_pred(self.decoder_norm(x))[:, prefix:]  # (B, N, p*p*C)

    def call(self, inputs, training=None):
        b = ops.shape(inputs)[0]
        ids_keep, ids_restore, mask = random_masking(
            b, self.num_patches, self.num_masked, self.seed_generator
        )
        latent = self.encode_visible(inputs, ids_keep, training=training)
        return self.decode(latent, ids_restore, training=training), mask

    def reconstruction_loss(self, images, pred, mask):
        """``forward_loss``: the MSE on the removed patches (see
        :func:`~kerasdl.methods.losses.masked_patch_mse`)."""
        target = patchify(images, self.backbone.patch_size)
        return masked_patch_mse(pred, target, mask, self.norm_pix_loss)

    @staticmethod
    def _images(data):
        data = strip_empty(data)
        return data[0] if isinstance(data, tuple | list) else data

    def train_step(self, data):
        x = self._images(data)
        with tf.GradientTape() as tape:
            pred, mask = self(x, training=True)
            loss = self.reconstruction_loss(x, pred, mask)
        if not self.optimizer.built:  # over every trainable variable, as a loaded model's is
            self.optimizer.build(self.trainable_variables)
        self._apply(tape, loss, self.loss_variables)
        return self._log({"loss": loss})

    def test_step(self, data):
        x = self._images(data)
        pred, mask = self(x, training=False)
        return self._log({"loss": self.reconstruction_loss(x, pred, mask)})

    def reconstruct(self, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(original, masked, reconstruction)`` images (reconstruction keeps visible patches)."""
        images = ops.convert_to_tensor(np.asarray(images, np.float32))
        pred, mask = self(images, training=False)
        p = self.backbone.patch_size
        target = patchify(images, p)
        pred = ops.cast(pred, "float32")
        if self.norm_pix_loss:  # undo the per-patch normalization with the true statistics
            mean, std = patch_norm_stats(target)
            pred = pred * std + mean
        m = ops.expand_dims(mask, -1)
        shape = self.backbone.input_shape_
        masked = unpatchify(target * (1.0 - m), p, shape)
        recon = unpatchify(target * (1.0 - m) + pred * m, p, shape)
        return (
            ops.convert_to_numpy(images),
            ops.convert_to_numpy(masked),
            ops.convert_to_numpy(recon),
        )

    def save_reconstructions(self, images, path: str | Path) -> Path:
        """Write a PNG with rows original / masked / reconstructed (written atomically)."""
        return plot_reconstructions(*self.reconstruct(images), path)

    def extra_callbacks(self, run_dir: str | Path, sample_images) -> list[keras.callbacks.Callback]:
        return [ReconstructionPNG(sample_images, Path(run_dir) / "mae_reconstructions.png")]


def plot_reconstructions(
    original: np.ndarray, masked: np.ndarray, recon: np.ndarray, path: str | Path
) -> Path:
    """Save a 3-row grid (original / masked / reconstructed) as a PNG, atomically."""
    from kerasdl.plotting import pyplot, save_figure_atomic

    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(original)
    fig, axes = plt.subplots(3, n, figsize=(1.2 * n, 3.8), squeeze=False)
    lo = float(min(original.min(), recon.min()))
    hi = float(max(original.max(), recon.max()))
    for row, (title, imgs) in enumerate(
        [("original", original), ("masked", masked), ("reconstructed", recon)]
    ):
        for i in range(n):
            img = np.clip((imgs[i] - lo) / max(hi - lo, 1e-8), 0, 1)
            ax = axes[row, i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    return path


class ReconstructionPNG(keras.callbacks.Callback):
    """Save MAE's original / masked / reconstructed images at the end of every epoch.

    Args:
        images: a small batch of images (8 is plenty).
        path: the PNG to (over)write.
    """

    def __init__(self, images, path: str | Path) -> None:
        super().__init__()
        self.images = np.asarray(images, np.float32)
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        self.model.save_reconstructions(self.images, self.path)
