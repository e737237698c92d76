"""The pre-norm Transformer encoder block of the Vision Transformer.

``x = x + DropPath(Dropout(MHSA(LN(x))))`` then ``x = x + DropPath(MLP(LN(x)))`` with the MLP
``Dense(mlp_dim) -> GELU -> Dropout -> Dense(D) -> Dropout``: torchvision's ``EncoderBlock`` and
``MLPBlock`` layer by layer (LayerNorm epsilon 1e-6, exact erf GELU, biases on Q, K, V and the
output projection, MLP weights Xavier-uniform and biases N(0, 1e-6)). Drop-path (stochastic depth)
is the DeiT addition; at ``drop_path=0`` (the default) the block equals torchvision's.

``weight_init="mae"`` initialises the block as the masked autoencoder's reference code does
(facebookresearch/mae ``models_mae.py`` ``_init_weights`` on timm's ``Block``): every linear
weight Xavier-uniform with PyTorch's fans (Q, K and V as the one fused ``Linear(D, 3D)``), every
bias zero. The architecture is the same; only the initial values differ.

References:
    Vaswani et al., "Attention Is All You Need", NeurIPS 2017. Dosovitskiy et al., "An Image is
    Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021. Touvron et al.,
    "Training data-efficient image transformers & distillation through attention" (DeiT), ICML 2021.
    He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, and
    facebookresearch/mae ``models_mae.py`` (``weight_init="mae"``).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.attention import _SelfAttention
from kerasdl.layers.dropconnect import DropPath
from kerasdl.layers.fused_grads import gelu
from kerasdl.layers.layer_norm import _LayerNorm

LN_EPSILON = 1e-6
#: initialisations: torchvision's ViT (the default) and the MAE reference code's
WEIGHT_INITS = ("torchvision", "mae")


def check_weight_init(weight_init: str) -> str:
    """``weight_init`` if it is one of :data:`WEIGHT_INITS`, else a ``ValueError``."""
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS}. Received: {weight_init!r}")
    return weight_init


@keras.saving.register_keras_serializable(package="kerasdl")
class TransformerMLP(ConfigurableLayer):
    """The Transformer MLP: ``Dense(mlp_dim) -> GELU -> Dropout -> Dense(D) -> Dropout``.

    Args:
        mlp_dim: hidden width (4 x the model width in ViT).
        dropout: dropout rate after the activation and after the output projection.
        activation: hidden activation (exact GELU as in ViT).
        weight_init: ``"torchvision"`` (biases N(0, 1e-6), torchvision's ``MLPBlock``) or
            ``"mae"`` (zero biases, the MAE reference code); weights are Xavier-uniform in both.

    Call arguments:
        inputs: ``(B, N, D)`` tokens.
        training: apply dropout when true.

    Example:
        >>> y = TransformerMLP(3072)(keras.ops.ones((2, 197, 768)))

    Reference:
        Dosovitskiy et al. 2021, equation (3); torchvision ``MLPBlock``.
    """

    def __init__(
        self,
        mlp_dim: int,
        dropout: float = 0.0,
        activation: str = "gelu",
        weight_init: str = "torchvision",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mlp_dim = int(mlp_dim)
        self.dropout = float(dropout)
        self.weight_init = check_weight_init(weight_init)
        if weight_init == "mae":
            bias_init = keras.initializers.Zeros()
        else:
            bias_init = keras.initializers.RandomNormal(stddev=1e-6)
        self.fc1 = keras.layers.Dense(
            self.mlp_dim,
            kernel_initializer="glorot_uniform",
            bias_initializer=bias_init,
            name="fc1",
        )
        self.act = keras.layers.Activation(activation, name="act")
        self.drop1 = keras.layers.Dropout(self.dropout, name="drop1")
        self.fc2 = None  # width known at build time
        self.drop2 = keras.layers.Dropout(self.dropout, name="drop2")
        self._bias_init = bias_init

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.fc1.build(input_shape)
        self.fc2 = keras.layers.Dense(
            dim, kernel_initializer="glorot_uniform", bias_initializer=self._bias_init, name="fc2"
        )
        self.fc2.build((*input_shape[:-1], self.mlp_dim))

    def call(self, inputs, training=None):
        if self._fused_ok(inputs, training):
            return self._fused_call(inputs, bool(training))
        x = self.fc1(inputs)  # (B, N, mlp_dim)
        x = self.drop1(self.act(x), training=training)
        x = self.fc2(x)  # (B, N, D)
        return self.drop2(x, training=training)

    def _fused_ok(self, inputs, training) -> bool:
        if keras.backend.backend() != "tensorflow" or self.activation != "gelu":
            return False
        if self.dropout > 0.0 and training:
            return False
        if len(inputs.shape) < 2 or getattr(inputs, "_keras_mask", None) is not None:
            return False
        for dense in (self.fc1, self.fc2):
            if "call" in vars(dense) or dense.lora_enabled or dense.quantization_mode:
                return False  # instrumented (MAC counting), LoRA or quantized: Keras's own path
        return True

    def _fused_call(self, inputs, training: bool = False):
        """The same function as two 2-D GEMMs with ``BiasAdd`` and the exact GELU written as
        ``h * ((erf(h / sqrt 2) + 1) / 2)``: the pattern TensorFlow's oneDNN remapper fuses
        into one ``_FusedMatMul`` (bias and GeluExact) in inference, and one ``_FusedMatMul``
        (bias) for the second GEMM; Keras's ``Dense`` on a 3-D input adds the bias as a
        broadcast ``AddV2`` after a reshape, which no remapper pattern matches."""
        import tensorflow as tf

        dtype = self.compute_dtype
        shape = tf.shape(inputs)
        x = tf.reshape(inputs, (-1, inputs.shape[-1]))  # (B N, D)
        h = tf.matmul(x, tf.cast(self.fc1.kernel, dtype))  # (B N, mlp_dim)
        h = tf.nn.bias_add(h, tf.cast(self.fc1.bias, dtype))
        h = gelu(h, training=training)  # exact GELU; one-kernel XLA gradient in training
        y = tf.matmul(h, tf.cast(self.fc2.kernel, dtype))  # (B N, D)
        y = tf.nn.bias_add(y, tf.cast(self.fc2.bias, dtype))
        return tf.reshape(y, tf.concat([shape[:-1], [y.shape[-1]]], 0))  # (B, N, D)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="kerasdl")
class TransformerEncoderBlock(ConfigurableLayer):
    """Pre-norm Transformer encoder block (ViT / torchvision ``EncoderBlock``).

    Computes ``x = x + drop_path(dropout(MHSA(LN1(x))))`` and ``x = x + drop_path(MLP(LN2(x)))``.
    Parameters per block for width ``D`` and MLP width ``M``: ``4 D^2 + 4 D`` (Q, K, V and output
    projections with biases) ``+ 2 D M + M + D`` (MLP) ``+ 4 D`` (two LayerNorms).

    Args:
        num_heads: attention heads; must divide the token width ``D``.
        mlp_dim: MLP hidden width.
        dropout: dropout after the attention output and inside the MLP.
        attention_dropout: dropout on the attention weights.
        drop_path: stochastic-depth rate of both residual branches (DeiT); 0 in torchvision's ViT.
        layer_norm_epsilon: LayerNorm epsilon (1e-6 as in ViT).
        activation: MLP activation.
        qkv_bias: biases on the Q, K, V and output projections.
        weight_init: ``"torchvision"`` (the default: torchvision's MLP init, Keras's Glorot on the
            attention kernels) or ``"mae"`` (the MAE reference code's: Xavier-uniform with
            PyTorch's fans, Q, K and V drawn as one fused ``Linear(D, 3D)``; zero biases).

    Call arguments:
        inputs: ``(B, N, D)`` tokens.
        training: apply dropout / drop-path when true.
        return_attention_scores: also return the ``(B, heads, N, N)`` attention weights.

    Example:
        >>> block = TransformerEncoderBlock(num_heads=12, mlp_dim=3072)
        >>> y = block(keras.ops.ones((2, 197, 768)))  # (2, 197, 768)

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, equations (2)-(3);
        Vaswani et al. 2017; Touvron et al. 2021 (drop-path).
    """

    def __init__(
        self,
        num_heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
        layer_norm_epsilon: float = LN_EPSILON,
        activation: str = "gelu",
        qkv_bias: bool = True,
        weight_init: str = "torchvision",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.weight_init = check_weight_init(weight_init)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.drop_path = float(drop_path)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.qkv_bias = bool(qkv_bias)
        self.ln_1 = _LayerNorm(epsilon=self.layer_norm_epsilon, name="ln_1")
        self.ln_2 = _LayerNorm(epsilon=self.layer_norm_epsilon, name="ln_2")
        self.attention = None  # key_dim depends on the token width, known at build time
        self.attn_drop = keras.layers.Dropout(self.dropout, name="attn_out_dropout")
        self.mlp = TransformerMLP(self.mlp_dim, self.dropout, activation, weight_init, name="mlp")
        self.drop_path_1 = DropPath(self.drop_path, name="drop_path_1")
        self.drop_path_2 = DropPath(self.drop_path, name="drop_path_2")

    def build(self, input_shape):
        dim = int(input_shape[-1])
        if dim % self.num_heads:
            raise ValueError(
                f"num_heads must divide the token width. Received: width={dim}, "
                f"num_heads={self.num_heads}"
            )
        kernel_init: Any = "glorot_uniform"
        if self.weight_init == "mae":  # xavier_uniform_ of timm's qkv = nn.Linear(D, 3 D)
            limit = math.sqrt(6.0 / (dim + 3 * dim))
            kernel_init = keras.initializers.RandomUniform(-limit, limit)
        self.attention = _SelfAttention(
            num_heads=self.num_heads,
            key_dim=dim // self.num_heads,
            dropout=self.attention_dropout,
            use_bias=self.qkv_bias,
            kernel_initializer=kernel_init,
            name="self_attention",
        )
        self.ln_1.build(input_shape)
        self.attention.build(input_shape, input_shape)
        if self.weight_init == "mae":  # ... and of its proj = nn.Linear(D, D)
            limit = math.sqrt(6.0 / (2 * dim))
            kernel = self.attention.output_dense.kernel
            kernel.assign(keras.initializers.RandomUniform(-limit, limit)(kernel.shape))
        self.ln_2.build(input_shape)
        self.mlp.build(input_shape)

    def call(self, inputs, training=None, return_attention_scores=False):
        x = self.ln_1(inputs)  # (B, N, D)
        out = self.attention(
            x, x, training=training, return_attention_scores=return_attention_scores
        )
        if return_attention_scores:
            x, scores = out  # (B, N, D), (B, heads, N, N)
        else:
            x = out  # (B, N, D)
        x = self.attn_drop(x, training=training)
        x = inputs + self.drop_path_1(x, training=training)  # (B, N, D)
        y = self.mlp(self.ln_2(x), training=training)  # (B, N, D)
        y = x + self.drop_path_2(y, training=training)
        return (y, scores) if return_attention_scores else y

    def compute_output_shape(self, input_shape):
        return input_shape


def encoder_block_params(dim: int, mlp_dim: int, qkv_bias: bool = True) -> int:
    """Trainable parameters of one :class:`TransformerEncoderBlock` of width ``dim``."""
    attn = 4 * dim * dim + (4 * dim if qkv_bias else 0)
    mlp = 2 * dim * mlp_dim + mlp_dim + dim
    return attn + mlp + 4 * dim
