"""Masked autoencoder (MAE): reconstruct randomly masked image patches from the visible ones.

The image is cut into ``p x p`` patches; a random 75% of them are removed per image. A ViT encoder
sees only the visible patches (with fixed 2-D sine-cosine position embeddings and a class token);
a light decoder receives the encoded visible tokens plus a shared learned mask token at every
removed position (with its own position embeddings) and predicts the pixels of every patch. The
loss is the mean squared error on the removed patches only, optionally against per-patch
normalized pixels. After pretraining, :attr:`MAE.encoder` (image -> pooled features, a
``pre_logits`` layer like every kerasdl classifier) is what the probes evaluate and what the runner
saves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasdl.methods.base import MethodModel, strip_empty
from kerasdl.methods.losses import masked_patch_mse, patch_norm_stats
from kerasdl.methods.mae_layers import (
    PatchEmbed,
    PositionAndClass,
    ViTBlock,
    patchify,
    unpatchify,
)
from kerasdl.models.base import check_num_classes, classifier_head

LN_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="kerasdl")
class MAEEncoder(keras.Model):
    """The MAE ViT encoder as a classifier-contract model: image -> pooled features (-> head).

    Args:
        num_classes: classes of an optional linear head (0: features only).
        input_shape: ``(H, W, C)``; H and W divisible by ``patch_size``.
        patch_size: patch side p.
        dim: token width.
        depth: Transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width / token width.
        pool: ``"cls"`` (class token, the paper's linear probe) or ``"mean"`` (average of the
            patch tokens, the paper's fine-tuning).

    Example:
        >>> enc = MAEEncoder(0, (32, 32, 3), patch_size=4, dim=192, depth=12, num_heads=3)

    Reference:
        He et al. 2022, section 3 and appendix A.1; Dosovitskiy et al. 2021 (ViT).
    """

    def __init__(
        self,
        num_classes: int = 0,
        input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
        patch_size: int = 16,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        pool: str = "cls",
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        h, w, c = (int(v) for v in input_shape)
        if h % patch_size or w % patch_size:
            raise ValueError(
                f"input_shape {tuple(input_shape)} must be divisible by patch_size {patch_size}."
            )
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean'. Received: {pool!r}")
        grid = (h // patch_size, w // patch_size)
        patch_embed = PatchEmbed(patch_size, dim, name="patch_embed")
        pos_cls = PositionAndClass(grid, name="pos_embed")
        blocks = [ViTBlock(num_heads, mlp_ratio, name=f"block{i}") for i in range(depth)]
        norm = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="norm")
        inputs = keras.Input((h, w, c), name="image")
        x = pos_cls(patch_embed(inputs))  # (B, 1 + N, D)
        for blk in blocks:
            x = blk(x)
        x = norm(x)
        if pool == "cls":
            x = keras.layers.Lambda(lambda t: t[:, 0], name="cls_token")(x)
        else:
            x = keras.layers.Lambda(lambda t: ops.mean(t[:, 1:], axis=1), name="mean_pool")(x)
        outputs = classifier_head(x, num_classes)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.num_classes = num_classes
        self.input_shape_ = (h, w, c)
        self.patch_size = int(patch_size)
        self.dim = int(dim)
        self.depth = int(depth)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.pool = pool
        self.patch_embed = patch_embed
        self.pos_cls = pos_cls
        self.blocks = blocks
        self.final_norm = norm

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape_),
            "patch_size": self.patch_size,
            "dim": self.dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "pool": self.pool,
        }


def random_masking(batch: int, num_patches: int, num_masked: int, seed):
    """Per-image random patch masks (MAE's ``random_masking``, by sorting uniform noise).

    Returns:
        ``(ids_keep, ids_restore, mask)``: ``(B, N - M)`` indices of the visible patches,
        ``(B, N)`` the inverse permutation, and ``(B, N)`` 1 = removed, 0 = visible.
    """
    noise = keras.random.uniform((batch, num_patches), seed=seed)
    ids_shuffle = ops.argsort(noise, axis=1)
    ids_restore = ops.argsort(ids_shuffle, axis=1)
    ids_keep = ids_shuffle[:, : num_patches - num_masked]
    keep = ops.concatenate(
        [ops.zeros((batch, num_patches - num_masked)), ops.ones((batch, num_masked))], axis=1
    )
    mask = ops.take_along_axis(keep, ids_restore, axis=1)
    return ids_keep, ids_restore, mask


@keras.saving.register_keras_serializable(package="kerasdl")
class MAE(MethodModel):
    """Masked-autoencoder pretraining of a ViT encoder.

    Args:
        backbone: a :class:`MAEEncoder` (``None``: one is built from ``input_shape`` and the
            encoder arguments below).
        input_shape: image shape when ``backbone`` is None.
        patch_size, dim, depth, num_heads, mlp_ratio, pool: encoder arguments when ``backbone``
            is None (ViT-B/16: 16, 768, 12, 12, 4).
        decoder_dim: decoder width (512).
        decoder_depth: decoder blocks (8).
        decoder_heads: decoder attention heads (16).
        mask_ratio: fraction of patches removed per image (0.75); ``int(N (1 - mask_ratio))``
            patches stay visible, as in the reference ``random_masking``.
        norm_pix_loss: reconstruct per-patch normalized pixels (improves representations in the
            paper; off by default as in the reference code).
        seed: seed of the masking.

    Call arguments:
        inputs: images ``(B, H, W, C)``.
        training: whether the layers run in training mode.

    ``call`` returns ``(pred, mask)``: ``(B, N, p*p*C)`` predicted patches and the ``(B, N)``
    mask. Training and validation data: image batches (``x`` or ``(x, y)``, labels ignored); see
    ``kerasdl.data.ssl.masked_image_dataset``. Logged: ``loss`` (masked-patch MSE).

    Example:
        >>> method = MAE(None, input_shape=(32, 32, 3), patch_size=4, dim=192, depth=6,
        ...              num_heads=3, decoder_dim=128, decoder_depth=2, decoder_heads=4)
        >>> method.compile(keras.optimizers.AdamW(1.5e-4, weight_decay=0.05, beta_2=0.95))

    Reference:
        He, Chen, Xie, Li, Dollar & Girshick, "Masked Autoencoders Are Scalable Vision Learners",
        CVPR 2022 (section 3; mask ratio 0.75, decoder 8 x 512, loss on masked patches).
    """

    def __init__(
        self,
        backbone: keras.Model | None = None,
        input_shape: tuple[int, int, int] | list[int] | None = None,
        patch_size: int = 16,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        pool: str = "cls",
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if backbone is None:
            if input_shape is None:
                raise ValueError("MAE needs a MAEEncoder backbone or an input_shape.")
            backbone = MAEEncoder(
                0, input_shape, patch_size, dim, depth, num_heads, mlp_ratio, pool, name="encoder"
            )
        if not isinstance(backbone, MAEEncoder):
            raise ValueError(
                "MAE's backbone must be a MAEEncoder (a ViT on visible patches). "
                f"Received: {type(backbone).__name__}"
            )
        super().__init__(backbone, seed=seed, **kwargs)
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1). Received: {mask_ratio}")
        enc = backbone
        self.encoder = enc
        self.grid = (enc.input_shape_[0] // enc.patch_size, enc.input_shape_[1] // enc.patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        # random_masking of facebookresearch/mae keeps int(L * (1 - mask_ratio)) patches
        self.num_masked = self.num_patches - int(self.num_patches * (1 - mask_ratio))
        if not 0 < self.num_masked < self.num_patches:
            raise ValueError(
                f"mask_ratio {mask_ratio} leaves no visible or no masked patch of "
                f"{self.num_patches}."
            )
        self.decoder_dim = int(decoder_dim)
        self.decoder_depth = int(decoder_depth)
        self.decoder_heads = int(decoder_heads)
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        patch_pixels = enc.patch_size**2 * enc.input_shape_[2]
        self.decoder_embed = keras.layers.Dense(self.decoder_dim, name="decoder_embed")
        self.decoder_pos = PositionAndClass(self.grid, learn_cls=False, name="decoder_pos_embed")
        self.mask_token = self.add_weight(
            shape=(1, 1, self.decoder_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="mask_token",
        )
        self.decoder_blocks = [
            ViTBlock(self.decoder_heads, enc.mlp_ratio, name=f"decoder_block{i}")
            for i in range(self.decoder_depth)
        ]
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="decoder_norm")
        self.decoder_pred = keras.layers.Dense(patch_pixels, name="decoder_pred")
        n_tok = (None, 1 + self.num_patches)
        self.decoder_embed.build((*n_tok, enc.dim))
        self.decoder_pos.build((None, self.num_patches, self.decoder_dim))
        for blk in self.decoder_blocks:
            blk.build((*n_tok, self.decoder_dim))
        self.decoder_norm.build((*n_tok, self.decoder_dim))
        self.decoder_pred.build((*n_tok, self.decoder_dim))
        self._make_trackers(["loss"])
        self._finish_build()

    @property
    def inference_model(self) -> keras.Model:
        return self.encoder

    def encode_visible(self, images, ids_keep, training=None):
        """Encoder on the visible patches only: ``(B, 1 + N - M, D)`` (class token first)."""
        enc = self.encoder
        tokens = enc.patch_embed(images)  # (B, N, D)
        tokens = enc.pos_cls.add_position(tokens)
        visible = ops.take_along_axis(tokens, ops.expand_dims(ids_keep, -1), axis=1)
        x = enc.pos_cls.prepend_class(visible)  # (B, 1 + N - M, D)
        for blk in enc.blocks:
            x = blk(x, training=training)
        return enc.final_norm(x)

    def decode(self, latent, ids_restore, training=None):
        """Decoder: visible latents + mask tokens in image order -> ``(B, N, p*p*C)`` pixels."""
        x = self.decoder_embed(latent)  # (B, 1 + N - M, Dd)
        b = ops.shape(x)[0]
        mask_tokens = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype), (b, self.num_masked, self.decoder_dim)
        )
        patches = ops.concatenate([x[:, 1:], mask_tokens], axis=1)  # (B, N, Dd), shuffled order
        patches = ops.take_along_axis(patches, ops.expand_dims(ids_restore, -1), axis=1)
        patches = self.decoder_pos.add_position(patches)
        x = ops.concatenate([x[:, :1], patches], axis=1)  # (B, 1 + N, Dd)
        for blk in self.decoder_blocks:
            x = blk(x, training=training)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]  # (B, N, p*p*C)

    def call(self, inputs, training=None):
        b = ops.shape(inputs)[0]
        ids_keep, ids_restore, mask = random_masking(
            b, self.num_patches, self.num_masked, self.seed_generator
        )
        latent = self.encode_visible(inputs, ids_keep, training=training)
        return self.decode(latent, ids_restore, training=training), mask

    def reconstruction_loss(self, images, pred, mask):
        return masked_patch_mse(
            pred, patchify(images, self.encoder.patch_size), mask, self.norm_pix_loss
        )

    @staticmethod
    def _images(data):
        data = strip_empty(data)
        return data[0] if isinstance(data, tuple | list) else data

    def train_step(self, data):
        x = self._images(data)
        with tf.GradientTape() as tape:
            pred, mask = self(x, training=True)
            loss = self.reconstruction_loss(x, pred, mask)
        self._apply(tape, loss)
        return self._log({"loss": loss})

    def test_step(self, data):
        x = self._images(data)
        pred, mask = self(x, training=False)
        return self._log({"loss": self.reconstruction_loss(x, pred, mask)})

    def reconstruct(self, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(original, masked, reconstruction)`` images (reconstruction keeps visible patches)."""
        images = ops.convert_to_tensor(np.asarray(images, np.float32))
        pred, mask = self(images, training=False)
        p = self.encoder.patch_size
        target = patchify(images, p)
        pred = ops.cast(pred, "float32")
        if self.norm_pix_loss:  # undo the per-patch normalization with the true statistics
            mean, std = patch_norm_stats(target)
            pred = pred * std + mean
        m = ops.expand_dims(mask, -1)
        shape = self.encoder.input_shape_
        masked = unpatchify(target * (1.0 - m), p, shape)
        recon = unpatchify(target * (1.0 - m) + pred * m, p, shape)
        return (
            ops.convert_to_numpy(images),
            ops.convert_to_numpy(masked),
            ops.convert_to_numpy(recon),
        )

    def save_reconstructions(self, images, path: str | Path) -> Path:
        """Write a PNG with rows original / masked / reconstructed (written atomically)."""
        from kerasdl.methods.mae_layers import plot_reconstructions

        return plot_reconstructions(*self.reconstruct(images), path)

    def extra_callbacks(self, run_dir: str | Path, sample_images) -> list[keras.callbacks.Callback]:
        return [ReconstructionPNG(sample_images, Path(run_dir) / "mae_reconstructions.png")]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "decoder_dim": self.decoder_dim,
            "decoder_depth": self.decoder_depth,
            "decoder_heads": self.decoder_heads,
            "mask_ratio": self.mask_ratio,
            "norm_pix_loss": self.norm_pix_loss,
        }


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
