"""Building blocks of the masked autoencoder: patch embedding, fixed position embedding, ViT block.

They follow the MAE reference code (``models_mae.py``, timm ``Block`` / ``PatchEmbed``): patch
embedding by a ``p x p`` stride-``p`` convolution, fixed 2-D sine-cosine position embeddings
(``kerasdl.layers.patch_embed.sincos_position_embeddings``; zero for the class token), pre-norm
Transformer blocks with LayerNorm epsilon 1e-6, exact GELU and an MLP of ``mlp_ratio`` x the
width, Xavier-uniform initialization.

Reference:
    He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, and its reference
    implementation; Dosovitskiy et al. 2021 (ViT); Vaswani et al. 2017 (sine-cosine embeddings).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasdl.layers.patch_embed import sincos_position_embeddings

LN_EPSILON = 1e-6


def patchify(images, patch_size: int):
    """``(B, H, W, C)`` -> ``(B, N, p*p*C)`` in row-major patch order."""
    b = ops.shape(images)[0]
    h, w, c = images.shape[1], images.shape[2], images.shape[3]
    gh, gw = h // patch_size, w // patch_size
    x = ops.reshape(images, (b, gh, patch_size, gw, patch_size, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b, gh * gw, patch_size * patch_size * c))


def unpatchify(patches, patch_size: int, image_shape: tuple[int, int, int]):
    """Inverse of :func:`patchify`."""
    h, w, c = image_shape
    gh, gw = h // patch_size, w // patch_size
    b = ops.shape(patches)[0]
    x = ops.reshape(patches, (b, gh, gw, patch_size, patch_size, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b, h, w, c))


@keras.saving.register_keras_serializable(package="kerasdl")
class PatchEmbed(keras.layers.Layer):
    """Non-overlapping patch embedding: ``p x p`` convolution with stride ``p``, flattened.

    Args:
        patch_size: patch side p.
        dim: token width.

    Call arguments:
        inputs: ``(B, H, W, C)`` images.

    Example:
        >>> PatchEmbed(4, 64)(keras.ops.ones((2, 32, 32, 3))).shape  # (2, 64, 64)

    Reference:
        Dosovitskiy et al. 2021, equation (1).
    """

    def __init__(self, patch_size: int, dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.dim = int(dim)
        self.proj = keras.layers.Conv2D(
            self.dim, self.patch_size, strides=self.patch_size, name="proj"
        )

    def build(self, input_shape):
        self.proj.build(input_shape)

    def call(self, inputs):
        x = self.proj(inputs)  # (B, gh, gw, D)
        return ops.reshape(x, (ops.shape(x)[0], -1, self.dim))  # (B, N, D)

    def compute_output_shape(self, input_shape):
        n = (input_shape[1] // self.patch_size) * (input_shape[2] // self.patch_size)
        return (input_shape[0], n, self.dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "patch_size": self.patch_size, "dim": self.dim}


@keras.saving.register_keras_serializable(package="kerasdl")
class PositionAndClass(keras.layers.Layer):
    """Adds fixed 2-D sin-cos position embeddings and prepends a learned class token.

    Args:
        grid: ``(gh, gw)`` patches per side.
        learn_cls: create (and prepend in ``call``) a class token initialized N(0, 0.02).

    Call arguments:
        inputs: ``(B, N, D)`` patch tokens in row-major order.

    Example:
        >>> PositionAndClass((8, 8))(keras.ops.ones((2, 64, 32))).shape  # (2, 65, 32)

    Reference:
        He et al. 2022 (fixed sin-cos embeddings, zero embedding for the class token).
    """

    def __init__(self, grid: tuple[int, int] | list[int], learn_cls: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.grid = (int(grid[0]), int(grid[1]))
        self.learn_cls = bool(learn_cls)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        table = sincos_position_embeddings(dim, self.grid, num_prefix_tokens=0)
        self.pos = self.add_weight(
            shape=table.shape,
            initializer=keras.initializers.Constant(table),
            trainable=False,
            name="pos",
        )
        if self.learn_cls:
            self.cls_token = self.add_weight(
                shape=(1, 1, dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="cls_token",
            )

    def add_position(self, tokens):
        return tokens + ops.cast(self.pos, tokens.dtype)

    def prepend_class(self, tokens):
        cls = ops.broadcast_to(
            ops.cast(self.cls_token, tokens.dtype), (ops.shape(tokens)[0], 1, tokens.shape[-1])
        )
        return ops.concatenate([cls, tokens], axis=1)

    def call(self, inputs):
        x = self.add_position(inputs)
        return self.prepend_class(x) if self.learn_cls else x

    def compute_output_shape(self, input_shape):
        n = input_shape[1] + 1 if (self.learn_cls and input_shape[1] is not None) else None
        return (input_shape[0], n if self.learn_cls else input_shape[1], input_shape[2])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "grid": list(self.grid), "learn_cls": self.learn_cls}


@keras.saving.register_keras_serializable(package="kerasdl")
class ViTBlock(keras.layers.Layer):
    """Pre-norm Transformer block (timm ``Block`` as used by MAE).

    ``x = x + MHSA(LN(x))``; ``x = x + MLP(LN(x))`` with ``MLP = Dense(r D) -> GELU -> Dense(D)``.

    Args:
        num_heads: attention heads (must divide the width).
        mlp_ratio: MLP hidden width / token width (4).

    Call arguments:
        inputs: ``(B, N, D)`` tokens.
        training: training mode (no dropout in MAE pretraining; passed on for completeness).

    Example:
        >>> ViTBlock(4)(keras.ops.ones((2, 17, 64))).shape  # (2, 17, 64)

    Reference:
        Dosovitskiy et al. 2021, equations (2)-(3); He et al. 2022 reference code.
    """

    def __init__(self, num_heads: int, mlp_ratio: float = 4.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.norm1 = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="norm1")
        self.norm2 = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="norm2")
        self.attn = None
        self.fc1 = None
        self.fc2 = None

    def build(self, input_shape):
        dim = int(input_shape[-1])
        if dim % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} must divide the width {dim}.")
        self.attn = keras.layers.MultiHeadAttention(
            self.num_heads, dim // self.num_heads, kernel_initializer="glorot_uniform", name="attn"
        )
        hidden = int(dim * self.mlp_ratio)
        self.fc1 = keras.layers.Dense(hidden, activation="gelu", name="fc1")
        self.fc2 = keras.layers.Dense(dim, name="fc2")
        self.norm1.build(input_shape)
        self.norm2.build(input_shape)
        self.attn.build(input_shape, input_shape)
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], hidden))

    def call(self, inputs, training=None):
        h = self.norm1(inputs)
        x = inputs + self.attn(h, h, training=training)  # (B, N, D)
        return x + self.fc2(self.fc1(self.norm2(x)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio}


def plot_reconstructions(
    original: np.ndarray, masked: np.ndarray, recon: np.ndarray, path: str | Path
) -> Path:
    """Save a 3-row grid (original / masked / reconstructed) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
