"""Patch embedding of the Vision Transformer: patchify, class token, position embedding.

An image ``(B, H, W, C)`` is cut into non-overlapping ``p x p`` patches, each linearly projected to
``D`` dimensions (a ``p x p`` convolution with stride ``p``, as torchvision's ``conv_proj``); a
learned class token is prepended and a position embedding added, giving ``(B, 1 + HW/p^2, D)``.

When the patch grid changes (a model made at 224 x 224 used at 384 x 384), the position
embeddings of the patches are resized as an image, by bicubic (or bilinear) interpolation; the
class token's embedding is kept (Dosovitskiy et al. 2021, section 3.2, "Fine-tuning and higher
resolution"). :func:`resize_position_embeddings` does it on arrays, and :class:`PatchEmbedding`
does it by itself when weights saved at another resolution are loaded
(``model_384.load_weights("vit_224.weights.h5")``).

References:
    Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
    Scale", ICLR 2021. He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
    (fixed 2-D sine-cosine position embeddings).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.transformer import check_weight_init

POSITION_EMBEDDINGS = ("learned", "sincos", "none")


def resize_position_embeddings(
    pos_embed: Any,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> np.ndarray:
    """Resize ViT position embeddings to a new patch grid.

    The prefix tokens' embeddings (class token) are kept; the ``old_grid`` embeddings are reshaped
    to an image ``(gh, gw, D)``, resized to ``new_grid`` and flattened back (timm's
    ``resample_abs_pos_embed``: half-pixel centres, antialiasing when shrinking).

    Args:
        pos_embed: ``(1, prefix + gh * gw, D)`` array.
        old_grid: ``(gh, gw)`` of ``pos_embed``.
        new_grid: the target ``(gh', gw')``.
        num_prefix_tokens: leading tokens that are not patches (1 for the class token).
        interpolation: ``"bicubic"`` or ``"bilinear"``.
        antialias: low-pass filter when downsampling.

    Returns:
        ``(1, prefix + gh' * gw', D)`` float32 NumPy array.

    Example:
        >>> pe = resize_position_embeddings(pe_224, (14, 14), (24, 24))  # ViT-B/16 224 -> 384
    """
    pos_embed = np.asarray(keras.ops.convert_to_numpy(pos_embed), dtype="float32")
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(
            f"interpolation must be 'bicubic' or 'bilinear'. Received: {interpolation}"
        )
    dim = pos_embed.shape[-1]
    if pos_embed.shape[1] != num_prefix_tokens + old_grid[0] * old_grid[1]:
        raise ValueError(
            f"Expected {num_prefix_tokens} + {old_grid[0]}x{old_grid[1]} position embeddings. "
            f"Received: shape {pos_embed.shape}"
        )
    if old_grid == new_grid:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim)  # (1, gh, gw, D)
    grid = ops.image.resize(grid, new_grid, interpolation=interpolation, antialias=antialias)
    grid = np.asarray(ops.convert_to_numpy(grid), dtype="float32").reshape(1, -1, dim)
    return np.concatenate([prefix, grid], axis=1)


def sincos_position_embeddings(dim: int, grid: tuple[int, int], num_prefix_tokens: int = 1):
    """Fixed 2-D sine-cosine position embeddings (MAE's ``get_2d_sincos_pos_embed``).

    The first half of the channels encodes the patch's column, the second half its row (the
    reference's order: its ``emb_h`` is computed from the first ``meshgrid`` output, which is the
    column index), each as ``[sin(pos w), cos(pos w)]`` with frequencies
    ``w_k = 1 / 10000^(k / (dim / 4))``; prefix tokens (the class token) get zero rows.

    Args:
        dim: token width, divisible by 4.
        grid: ``(gh, gw)`` patches per column and row (the reference takes square grids only).
        num_prefix_tokens: leading zero rows (1: ``cls_token=True`` in the reference).

    Returns:
        ``(1, prefix + gh * gw, dim)`` float32 NumPy array.

    Reference:
        He et al. 2022; facebookresearch/mae ``util/pos_embed.py``.
    """
    if dim % 4:
        raise ValueError(f"sincos position embeddings need a width divisible by 4. Received: {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype="float64") / (dim / 4.0))

    def one_d(pos):
        out = np.outer(pos.reshape(-1), omega)  # (M, D/4)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D/2)

    grid_w, grid_h = np.meshgrid(np.arange(grid[1]), np.arange(grid[0]))  # each (gh, gw)
    emb = np.concatenate([one_d(grid_w), one_d(grid_h)], axis=1)  # (gh * gw, D), as MAE's code
    emb = np.concatenate([np.zeros((num_prefix_tokens, dim)), emb], axis=0)
    return emb[None].astype("float32")


def patchify(images, patch_size: int):
    """``(B, H, W, C)`` images -> ``(B, N, p*p*C)`` patches in row-major patch order.

    Each patch is flattened row by row with the channels last: MAE's ``patchify``
    (``einsum("nchpwq->nhwpqc")``) on channels-last images, so its targets line up with
    :class:`PatchEmbedding`'s tokens.
    """
    b = ops.shape(images)[0]
    h, w, c = images.shape[1], images.shape[2], images.shape[3]
    gh, gw = h // patch_size, w // patch_size
    x = ops.reshape(images, (b, gh, patch_size, gw, patch_size, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, gh, gw, p, p, C)
    return ops.reshape(x, (b, gh * gw, patch_size * patch_size * c))


def unpatchify(patches, patch_size: int, image_shape: tuple[int, int, int]):
    """Inverse of :func:`patchify`: ``(B, N, p*p*C)`` -> ``(B, H, W, C)``."""
    h, w, c = image_shape
    gh, gw = h // patch_size, w // patch_size
    b = ops.shape(patches)[0]
    x = ops.reshape(patches, (b, gh, gw, patch_size, patch_size, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, gh, p, gw, p, C)
    return ops.reshape(x, (b, h, w, c))


@keras.saving.register_keras_serializable(package="kerasdl")
class PatchEmbedding(ConfigurableLayer):
    """Patchify + linear projection + class token + position embedding (ViT).

    Args:
        hidden_dim: token width ``D``.
        patch_size: patch side ``p``; must divide the input height and width.
        class_token: prepend a learned class token (initialised to zeros, as torchvision).
        position_embedding: ``"learned"`` (N(0, 0.02) init, ViT), ``"sincos"`` (fixed 2-D
            sine-cosine, MAE) or ``"none"``.
        interpolation: how position embeddings are resized when weights from another grid are
            loaded (``"bicubic"`` or ``"bilinear"``).
        weight_init: ``"torchvision"`` (projection truncated-normal with variance ``1/fan_in``,
            zero bias, zero class token) or ``"mae"`` (the MAE reference code: projection
            Xavier-uniform as a ``Linear(C p^2, D)``, PyTorch's default ``Conv2d`` bias, class
            token N(0, 0.02)).

    Call arguments:
        inputs: ``(B, H, W, C)`` images.

    Returns:
        ``(B, prefix + (H/p)(W/p), D)`` tokens, prefix = 1 with a class token.

    The pieces are available separately for methods that mask patches (MAE):
    :meth:`patch_tokens` gives the position-embedded patches and :meth:`prefix_tokens` the class
    token with its position embedding.

    Example:
        >>> tokens = PatchEmbedding(768, 16)(keras.ops.ones((2, 224, 224, 3)))  # (2, 197, 768)

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, equation (1).
    """

    def __init__(
        self,
        hidden_dim: int,
        patch_size: int,
        class_token: bool = True,
        position_embedding: str = "learned",
        interpolation: str = "bicubic",
        weight_init: str = "torchvision",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.weight_init = check_weight_init(weight_init)
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"position_embedding must be one of {POSITION_EMBEDDINGS}. "
                f"Received: {position_embedding!r}"
            )
        self.hidden_dim = int(hidden_dim)
        self.patch_size = int(patch_size)
        self.class_token = bool(class_token)
        self.num_prefix_tokens = int(self.class_token)
        self.grid_size: tuple[int, int] | None = None
        self.proj = None  # initializer depends on the input channels

    def build(self, input_shape):
        _, h, w, c = input_shape
        p = self.patch_size
        if h is None or w is None or h % p or w % p:
            raise ValueError(
                f"The patch size must divide the input height and width. Received: "
                f"input {h}x{w}, patch_size={p}"
            )
        self.grid_size = (h // p, w // p)
        fan_in = int(c) * p * p
        kernel_init: Any = keras.initializers.TruncatedNormal(stddev=math.sqrt(1.0 / fan_in))
        bias_init: Any = "zeros"
        cls_init: Any = "zeros"
        if self.weight_init == "mae":  # models_mae.py initialize_weights
            limit = math.sqrt(6.0 / (fan_in + self.hidden_dim))  # xavier_uniform_ of w.view(D, -1)
            kernel_init = keras.initializers.RandomUniform(-limit, limit)
            bias_limit = 1.0 / math.sqrt(fan_in)  # nn.Conv2d's own bias init, left as is
            bias_init = keras.initializers.RandomUniform(-bias_limit, bias_limit)
            cls_init = keras.initializers.RandomNormal(stddev=0.02)
        self.proj = keras.layers.Conv2D(
            self.hidden_dim,
            p,
            strides=p,
            padding="valid",
            kernel_initializer=kernel_init,
            bias_initializer=bias_init,
            name="conv_proj",
        )
        self.proj.build(input_shape)
        self._own = []
        if self.class_token:
            self.cls_token = self.add_weight(
                shape=(1, 1, self.hidden_dim), initializer=cls_init, name="class_token"
            )
            self._own.append(self.cls_token)
        n = self.num_prefix_tokens + self.num_patches
        if self.position_embedding == "learned":
            self.pos_embedding = self.add_weight(
                shape=(1, n, self.hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="pos_embedding",
            )
            self._own.append(self.pos_embedding)
        elif self.position_embedding == "sincos":
            table = sincos_position_embeddings(
                self.hidden_dim, self.grid_size, self.num_prefix_tokens
            )
            self.pos_embedding = self.add_weight(
                shape=(1, n, self.hidden_dim),
                initializer=keras.initializers.Constant(table),
                trainable=False,
                name="pos_embedding",
            )
            self._own.append(self.pos_embedding)
        else:
            self.pos_embedding = None

    @property
    def num_patches(self) -> int:
        """Patches per image, ``(H/p) * (W/p)`` (after build)."""
        return self.grid_size[0] * self.grid_size[1]

    def patch_tokens(self, images):
        """Projected patches plus their position embeddings, ``(B, N, D)``."""
        if self._gemm_ok(images):
            x = self._project_patches(images)  # (B, N, D)
        else:
            x = self.proj(images)  # (B, H/p, W/p, D)
            x = ops.reshape(x, (ops.shape(x)[0], self.num_patches, self.hidden_dim))  # (B, N, D)
        if self.pos_embedding is not None:
            x = x + ops.cast(self.pos_embedding[:, self.num_prefix_tokens :], x.dtype)
        return x

    def _gemm_ok(self, images) -> bool:
        if keras.backend.backend() != "tensorflow" or "call" in vars(self.proj):
            return False  # other backends, or an instrumented projection (MAC counting)
        if len(images.shape) != 4 or self.proj.data_format != "channels_last":
            return False
        h, w = images.shape[1], images.shape[2]
        return (h, w) == (self.grid_size[0] * self.patch_size, self.grid_size[1] * self.patch_size)

    def _project_patches(self, images):
        """The ``p x p`` stride-``p`` convolution as what it is, one GEMM over the patches:
        ``(B N, p p C) x (p p C, D)`` with the kernel reshaped in its own ``(p, p, C)`` order
        (the same products and sums; oneDNN's strided convolution ran at a fraction of the
        GEMM's speed for ViT-B/32, and its backward computes no image gradient here either)."""
        import tensorflow as tf

        p, d = self.patch_size, self.hidden_dim
        (gh, gw), c = self.grid_size, images.shape[-1]
        dtype = self.proj.compute_dtype
        x = tf.cast(images, dtype)
        b = tf.shape(x)[0]
        x = tf.reshape(x, (b, gh, p, gw, p, c))
        x = tf.reshape(tf.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, p * p * c))  # (B N, p p C)
        y = tf.matmul(x, tf.reshape(tf.cast(self.proj.kernel, dtype), (p * p * c, d)))
        if self.proj.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.proj.bias, dtype))
        return tf.reshape(y, (b, gh * gw, d))  # (B, N, D)

    def prefix_tokens(self, batch_size, dtype="float32"):
        """The class token plus its position embedding, broadcast to ``(B, 1, D)``."""
        if not self.class_token:
            raise ValueError(f"Layer {self.name!r} has no class token (class_token=False).")
        tok = self.cls_token
        if self.pos_embedding is not None:
            tok = tok + self.pos_embedding[:, :1]
        return ops.broadcast_to(ops.cast(tok, dtype), (batch_size, 1, self.hidden_dim))

    def call(self, inputs):
        x = self.patch_tokens(inputs)  # (B, N, D)
        if self.class_token:
            cls = self.prefix_tokens(ops.shape(x)[0], x.dtype)  # (B, 1, D)
            x = ops.concatenate([cls, x], axis=1)  # (B, 1 + N, D)
        return x

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        n = (h // self.patch_size) * (w // self.patch_size)
        return (b, self.num_prefix_tokens + n, self.hidden_dim)

    def assign_position_embedding(self, values: Any, old_grid: tuple[int, int] | None = None):
        """Assign position embeddings from another grid, resizing them (square grid assumed
        when ``old_grid`` is not given). Fixed sine-cosine tables are recomputed, not resized."""
        if self.position_embedding != "learned":
            return
        values = np.asarray(keras.ops.convert_to_numpy(values), dtype="float32")
        if tuple(values.shape) != tuple(self.pos_embedding.shape):
            if old_grid is None:
                side = math.isqrt(values.shape[1] - self.num_prefix_tokens)
                old_grid = (side, side)
            values = resize_position_embeddings(
                values, old_grid, self.grid_size, self.num_prefix_tokens, self.interpolation
            )
        self.pos_embedding.assign(values)

    def save_own_variables(self, store):
        for i, v in enumerate(self._own):
            store[f"{i}"] = v

    def load_own_variables(self, store):
        if len(store.keys()) != len(self._own):
            raise ValueError(
                f"Layer {self.name!r} expects {len(self._own)} variables, but the saved state has "
                f"{len(store.keys())}."
            )
        for i, v in enumerate(self._own):
            if v is self.pos_embedding:
                self.assign_position_embedding(store[f"{i}"])
            else:
                v.assign(store[f"{i}"])
