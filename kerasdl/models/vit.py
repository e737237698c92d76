"""Vision Transformer (ViT) and its DeiT-sized variants.

An image is cut into patches, embedded with a class token and learned position embeddings
(:class:`~kerasdl.layers.patch_embed.PatchEmbedding`), passed through ``num_layers`` pre-norm
Transformer encoder blocks (:class:`~kerasdl.layers.transformer.TransformerEncoderBlock`) and a
final LayerNorm; the class token's output is the pooled feature. Layer by layer and parameter by
parameter this is torchvision's ``VisionTransformer`` (GELU, LayerNorm epsilon 1e-6, dropout after
the position embedding, optional ``representation_size`` pre-logits ``Dense + tanh``); ``drop_path``
adds DeiT's stochastic depth, increasing linearly from 0 to ``drop_path`` over the blocks.

With ``class_token``, ``position_embedding="sincos"``, ``pool`` and ``weight_init="mae"`` the same
model is the encoder of the masked autoencoder (He et al. 2022): MAE wraps a registry ViT.

Any patch size that divides the input works. A model built at one resolution is moved to another
with :func:`resize_vit` (position embeddings interpolated bicubically), or by loading its saved
weights into a model built at the new size (``PatchEmbedding`` resizes on load).

References:
    Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
    Scale", ICLR 2021. Touvron et al., "Training data-efficient image transformers & distillation
    through attention", ICML 2021 (DeiT-Ti/S: ``vit_ti_16``, ``vit_s_16``). He et al., "Masked
    Autoencoders Are Scalable Vision Learners", CVPR 2022, and facebookresearch/mae
    (``models_mae.py``, ``util/pos_embed.py``): the MAE options.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
from keras import ops

from kerasdl.errors import UserError
from kerasdl.layers.patch_embed import POSITION_EMBEDDINGS, PatchEmbedding
from kerasdl.layers.transformer import (
    LN_EPSILON,
    WEIGHT_INITS,
    TransformerEncoderBlock,
    encoder_block_params,
)
from kerasdl.models.base import Classifier, check_num_classes, classifier_head
from kerasdl.registry import register_variants


@keras.saving.register_keras_serializable(package="kerasdl")
class TokenPool(keras.layers.Layer):
    """Pool a token sequence: the first (class) token, or the mean of the patch tokens.

    Args:
        mode: ``"token"`` (ViT) or ``"avg"`` (mean over tokens after the prefix).
        num_prefix_tokens: leading non-patch tokens skipped by ``"avg"``.

    Call arguments:
        inputs: ``(B, N, D)`` tokens.
    """

    def __init__(self, mode: str = "token", num_prefix_tokens: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("token", "avg"):
            raise ValueError(f"mode must be 'token' or 'avg'. Received: {mode!r}")
        self.mode = mode
        self.num_prefix_tokens = int(num_prefix_tokens)

    def call(self, inputs):
        if self.mode == "token":
            return inputs[:, 0]  # (B, D)
        return ops.mean(inputs[:, self.num_prefix_tokens :], axis=1)  # (B, D)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "mode": self.mode,
            "num_prefix_tokens": self.num_prefix_tokens,
        }


POOLS = ("token", "avg", "none")


@keras.saving.register_keras_serializable(package="kerasdl")
class VisionTransformer(Classifier):
    """Vision Transformer classifier (torchvision ``VisionTransformer``), also MAE's encoder.

    With the defaults this is torchvision's ViT. The options ``class_token``,
    ``position_embedding``, ``pool`` and ``weight_init`` give the encoder of the masked
    autoencoder (He et al. 2022, facebookresearch/mae ``models_mae.py``: fixed 2-D sine-cosine
    position embeddings with a zero row for the class token, Xavier-uniform weights and zero
    biases), which :class:`~kerasdl.methods.mae.MAE` pretrains on the visible patches through
    :meth:`encode_tokens`.

    Args:
        num_classes: output classes (logits); 0 for the pooled features only.
        input_shape: ``(H, W, C)``; ``patch_size`` must divide ``H`` and ``W``.
        patch_size: patch side.
        hidden_dim: token width ``D``.
        num_layers: encoder blocks.
        num_heads: attention heads per block.
        mlp_dim: MLP hidden width.
        dropout: dropout after the position embedding, after attention and in the MLPs.
        attention_dropout: dropout on the attention weights.
        drop_path: maximum stochastic-depth rate (linear over blocks, DeiT); 0 in torchvision.
        representation_size: width of torchvision's optional ``Dense + tanh`` pre-logits layer.
        pool: ``"token"`` (the class token, ViT; MAE's linear probe), ``"avg"`` (mean of the
            patch tokens; MAE's fine-tuning) or ``"none"`` (the ``(B, N, D)`` token sequence
            as the features; needs ``num_classes=0``).
        head_dropout: dropout before the head.
        class_token: prepend a learned class token (``False``: patch tokens only; ``pool`` must
            then be ``"avg"`` or ``"none"``).
        position_embedding: ``"learned"`` (ViT), ``"sincos"`` (fixed 2-D sine-cosine, MAE) or
            ``"none"``.
        weight_init: ``"torchvision"`` or ``"mae"`` (the MAE reference initialisation of the patch
            projection, class token and blocks; see :class:`PatchEmbedding` and
            :class:`TransformerEncoderBlock`).

    Example:
        >>> model = VisionTransformer(num_classes=10, input_shape=(32, 32, 3), patch_size=4,
        ...                           hidden_dim=192, num_layers=12, num_heads=3, mlp_dim=768)
        >>> mae_encoder = VisionTransformer(0, (32, 32, 3), 4, 192, 12, 3, 768,
        ...                                 position_embedding="sincos", weight_init="mae")

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021. He et al., "Masked
        Autoencoders Are Scalable Vision Learners", CVPR 2022 (the MAE options).
    """

    # features_only returns the last 3 blocks by default (timm's vision_transformer out_indices=3).
    default_out_indices = 3

    def __init__(
        self,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
        patch_size: int = 16,
        hidden_dim: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
        representation_size: int | None = None,
        pool: str = "token",
        head_dropout: float = 0.0,
        class_token: bool = True,
        position_embedding: str = "learned",
        weight_init: str = "torchvision",
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        h, w = int(input_shape[0]), int(input_shape[1])
        if h % patch_size or w % patch_size:
            raise UserError(
                f"ViT patch_size={patch_size} must divide the input size. Received: input_shape="
                f"{tuple(input_shape)}"
            )
        if hidden_dim % num_heads:
            raise UserError(f"ViT num_heads={num_heads} must divide hidden_dim={hidden_dim}.")
        if pool not in POOLS:
            raise UserError(f"ViT pool must be one of {', '.join(POOLS)}. Received: {pool!r}")
        if pool == "token" and not class_token:
            raise UserError("ViT pool='token' needs class_token=True (or pool 'avg' / 'none').")
        if pool == "none" and (num_classes or representation_size):
            raise UserError(
                "ViT pool='none' gives the token sequence: it needs num_classes=0 and no "
                f"representation_size. Received: num_classes={num_classes}, "
                f"representation_size={representation_size}"
            )
        if position_embedding not in POSITION_EMBEDDINGS:
            raise UserError(
                f"ViT position_embedding must be one of {', '.join(POSITION_EMBEDDINGS)}. "
                f"Received: {position_embedding!r}"
            )
        if weight_init not in WEIGHT_INITS:
            raise UserError(
                f"ViT weight_init must be one of {', '.join(WEIGHT_INITS)}. "
                f"Received: {weight_init!r}"
            )
        if position_embedding == "sincos" and hidden_dim % 4:
            raise UserError(
                f"ViT position_embedding='sincos' needs hidden_dim divisible by 4. "
                f"Received: {hidden_dim}"
            )
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        patch_embed = PatchEmbedding(
            hidden_dim,
            patch_size,
            class_token=class_token,
            position_embedding=position_embedding,
            weight_init=weight_init,
            name="patch_embed",
        )
        x = patch_embed(inputs)  # (B, prefix + N, D)
        layers = _encoder_layers(
            num_layers, num_heads, mlp_dim, dropout, attention_dropout, drop_path, weight_init
        )
        for layer in layers:  # each made and called in turn (the order of the initial draws)
            x = layer(x)  # (B, prefix + N, D)
        if pool != "none":
            x = TokenPool(pool, int(class_token), name="pool")(x)  # (B, D)
        if representation_size:
            x = keras.layers.Dense(representation_size, activation="tanh", name="pre_logits_fc")(x)
        outputs = classifier_head(x, num_classes, head_dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.class_token = bool(class_token)  # the config keeps the normalised form

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` for ``features_only``: every encoder block (timm's
        ``forward_intermediates``, without the final norm); the features model turns the patch
        tokens into a ``(H/p, W/p, D)`` map."""
        return [(f"encoder_layer_{i}", self.patch_size) for i in range(self.num_layers)]

    @property
    def patch_embed(self) -> PatchEmbedding:
        """The patch embedding (patchify, class token, position embedding)."""
        return self.get_layer("patch_embed")

    @property
    def blocks(self) -> list[TransformerEncoderBlock]:
        """The ``num_layers`` encoder blocks, in order."""
        return [self.get_layer(f"encoder_layer_{i}") for i in range(self.num_layers)]

    @property
    def num_prefix_tokens(self) -> int:
        """Leading non-patch tokens of the sequence: 1 with a class token, else 0."""
        return int(self.class_token)

    def encode_tokens(self, patch_tokens, training=None):
        """The encoder on position-embedded patch tokens ``(B, n, D)``, any ``n``: the class token
        is prepended, then the dropout, the blocks and the final LayerNorm run; returns
        ``(B, prefix + n, D)``.

        On all the patches of :attr:`patch_embed` in order this is the model's own token
        sequence before pooling; MAE calls it on the visible patches only (``forward_encoder``
        of facebookresearch/mae ``models_mae.py``).
        """
        x = patch_tokens
        if self.class_token:
            cls = self.patch_embed.prefix_tokens(ops.shape(x)[0], x.dtype)  # (B, 1, D)
            x = ops.concatenate([cls, x], axis=1)  # (B, 1 + n, D)
        x = self.get_layer("pos_dropout")(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)  # (B, prefix + n, D)
        return self.get_layer("encoder_ln")(x)


def _encoder_layers(
    num_layers: int,
    num_heads: int,
    mlp_dim: int,
    dropout: float,
    attention_dropout: float,
    drop_path: float,
    weight_init: str,
) -> Iterator[keras.layers.Layer]:
    """The position dropout, the blocks (drop-path rising linearly) and the final LayerNorm,
    made one at a time as they are consumed."""
    yield keras.layers.Dropout(dropout, name="pos_dropout")
    for i in range(num_layers):
        rate = drop_path * i / (num_layers - 1) if num_layers > 1 else 0.0
        yield TransformerEncoderBlock(
            num_heads,
            mlp_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            drop_path=rate,
            weight_init=weight_init,
            name=f"encoder_layer_{i}",
        )
    yield keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="encoder_ln")


def vit_param_count(
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
    patch_size: int = 16,
    hidden_dim: int = 768,
    num_layers: int = 12,
    mlp_dim: int = 3072,
    representation_size: int | None = None,
    class_token: bool = True,
    position_embedding: str = "learned",
    **_: Any,
) -> int:
    """Parameters of a :class:`VisionTransformer` (``count_params``), from its configuration.

    Takes the same keyword arguments as the model (extra ones are ignored), so
    ``vit_param_count(**registry_defaults)`` counts a variant without building it. All weights
    are trainable except a ``"sincos"`` position table, which is counted (as ``count_params``
    does) but fixed.
    """
    h, w, c = input_shape
    d = hidden_dim
    tokens = int(class_token) + (h // patch_size) * (w // patch_size)
    n = c * patch_size * patch_size * d + d  # patchify convolution
    n += d * int(class_token)  # class token
    n += tokens * d if position_embedding != "none" else 0  # position embeddings
    n += num_layers * encoder_block_params(d, mlp_dim)
    n += 2 * d  # final LayerNorm
    feat = d
    if representation_size:
        n += d * representation_size + representation_size
        feat = representation_size
    if num_classes:
        n += feat * num_classes + num_classes
    return n


def resize_vit(model: VisionTransformer, input_shape: tuple[int, int, int]) -> VisionTransformer:
    """A copy of ``model`` built for ``input_shape`` with its weights, position embeddings resized.

    Every weight is copied; the patch position embeddings are interpolated bicubically to the new
    patch grid (Dosovitskiy et al. 2021, section 3.2). Saved weights can also be loaded straight
    into a model built at the new size: ``PatchEmbedding`` resizes on load.

    Example:
        >>> model_384 = resize_vit(model_224, (384, 384, 3))
    """
    config = {**model.get_config(), "input_shape": list(input_shape)}
    new = type(model).from_config(config)
    for layer in model.layers:
        target = new.get_layer(layer.name)
        if isinstance(layer, PatchEmbedding):
            target.proj.set_weights(layer.proj.get_weights())
            if layer.class_token:
                target.cls_token.assign(layer.cls_token)
            target.assign_position_embedding(layer.pos_embedding, layer.grid_size)
        else:
            target.set_weights(layer.get_weights())
    return new


VARIANTS = {
    "vit_ti_16": dict(patch_size=16, hidden_dim=192, num_layers=12, num_heads=3, mlp_dim=768),
    "vit_s_16": dict(patch_size=16, hidden_dim=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "vit_b_16": dict(patch_size=16, hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "vit_b_32": dict(patch_size=32, hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "vit_l_16": dict(patch_size=16, hidden_dim=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "vit_l_32": dict(patch_size=32, hidden_dim=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "vit_h_14": dict(patch_size=14, hidden_dim=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}
# Each row's smallest input is two patches a side; DeiT-Ti/S are Touvron et al.'s sizes.
_META = {name: dict(min_input=2 * row["patch_size"]) for name, row in VARIANTS.items()}
_META["vit_ti_16"]["paper"] = "Touvron et al. 2021 (DeiT-Ti)"
_META["vit_s_16"]["paper"] = "Touvron et al. 2021 (DeiT-S)"

register_variants(
    VisionTransformer,
    VARIANTS,
    family="vit",
    paper="Dosovitskiy et al. 2021",
    year=2021,
    meta=_META,
)
