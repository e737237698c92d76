"""Multi-head self-attention with Keras's weights and function, computed with fewer, larger GEMMs.

``keras.layers.MultiHeadAttention`` projects queries, keys and values with three ``EinsumDense``
layers (``(B, N, D) x (D, H, d)``) and the output with a fourth; on the TensorFlow backend each
is an ``Einsum`` kernel forward and more ``Einsum``/``BatchMatMul`` kernels backward, followed by
separate bias additions. :class:`_SelfAttention` keeps exactly those layers and variables (names,
shapes, initialisers, saved form: a checkpoint of one loads into the other) but, for plain
self-attention on the TensorFlow backend, computes:

* Q, K and V as three ``(B N, D) x (D, H d)`` matrix products with ``BiasAdd`` (oneDNN fuses
  each bias into its GEMM). One GEMM over the three kernels concatenated was tried: the
  concatenation copies the three kernels on every call (and splits their gradient back), which
  cost more than the larger GEMM saved (ViT-B/32 training step 6 % slower, inference no faster),
* the scores ``Q K^T`` and ``softmax(.) V`` as batched matrix products over ``(B, H)``, with the
  scores scaled by ``1 / sqrt(d)`` and the softmax in float32 as Keras's
  ``ops.dot_product_attention`` path does,
* the output projection as one ``(B N, H d) x (H d, D)`` product.

The arithmetic is the same sums of the same products (only the summation order inside a GEMM may
differ: float rounding); anything else (masks, attention dropout in training, returning the
scores, cross-attention, other backends) runs Keras's own implementation.

Reference:
    Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
"""

from __future__ import annotations

import keras


class _SelfAttention(keras.layers.MultiHeadAttention):
    """``keras.layers.MultiHeadAttention`` with a fused path for plain self-attention.

    Same arguments, weights and outputs as ``keras.layers.MultiHeadAttention``. Private and not
    registered for serialization: :class:`~kerasdl.layers.transformer.TransformerEncoderBlock`
    makes it in ``build``, so a saved model holds its weights, not its class.

    Call arguments:
        query: ``(B, N, D)`` tokens; ``value`` (and ``key``) the same tensor for self-attention.
        Others: as ``keras.layers.MultiHeadAttention``.

    Example:
        >>> attn = _SelfAttention(num_heads=12, key_dim=64)
        >>> y = attn(x, x)  # x: (B, N, 768)
    """

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        if self._fused_ok(query, value, key, training) and not (
            return_attention_scores
            or use_causal_mask
            or attention_mask is not None
            or query_mask is not None
            or value_mask is not None
            or key_mask is not None
        ):
            return self._fused_self_attention(query)
        return super().call(
            query,
            value,
            key=key,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
            use_causal_mask=use_causal_mask,
        )

    def _fused_ok(self, query, value, key, training) -> bool:
        if keras.backend.backend() != "tensorflow" or value is not query:
            return False
        if key is not None and key is not query:
            return False
        if self._dropout > 0.0 and training:
            return False
        if len(query.shape) != 3 or getattr(query, "_keras_mask", None) is not None:
            return False
        dense = (self._query_dense, self._key_dense, self._value_dense, self._output_dense)
        if any("call" in vars(layer) for layer in dense):
            return False  # a projection's call is instrumented (e.g. MAC counting): run it
        # The default projections: "abc,cde->abde" for Q/K/V, "abcd,cde->abe" for the output.
        return self._output_shape is None and tuple(self._attention_axes) == (1,)

    def _fused_self_attention(self, x):
        import tensorflow as tf

        dtype = self.compute_dtype
        heads, dk, dv = self._num_heads, self._key_dim, self._value_dim
        d = x.shape[-1]
        shape = tf.shape(x)
        b, n = shape[0], shape[1]
        dense = (self._query_dense, self._key_dense, self._value_dense)
        x2 = tf.reshape(x, (-1, d))  # (B N, D)
        q, k, v = (self._project(tf, x2, layer, dtype) for layer in dense)  # (B N, H d) each
        q = tf.transpose(tf.reshape(q, (b, n, heads, dk)), (0, 2, 1, 3))  # (B, H, N, dk)
        k = tf.transpose(tf.reshape(k, (b, n, heads, dk)), (0, 2, 1, 3))  # (B, H, N, dk)
        v = tf.transpose(tf.reshape(v, (b, n, heads, dv)), (0, 2, 1, 3))  # (B, H, N, dv)
        logits = tf.matmul(q, k, transpose_b=True)  # (B, H, N, N)
        logits = tf.cast(logits, keras.backend.result_type(logits.dtype, "float32"))
        logits = logits * tf.cast(self._inverse_sqrt_key_dim, logits.dtype)
        probs = tf.cast(tf.nn.softmax(logits, axis=-1), v.dtype)
        out = tf.matmul(probs, v)  # (B, H, N, dv)
        out = tf.reshape(tf.transpose(out, (0, 2, 1, 3)), (-1, heads * dv))  # (B N, H dv)
        w_out = tf.reshape(tf.cast(self._output_dense.kernel, dtype), (heads * dv, -1))
        out = tf.matmul(out, w_out)  # (B N, D)
        if self._use_bias:
            out = tf.nn.bias_add(out, tf.cast(self._output_dense.bias, dtype))
        return tf.reshape(out, (b, n, w_out.shape[-1]))

    def _project(self, tf, x2, layer, dtype):
        """``x2 (B N, D) @ kernel (D, H d) + bias``: one projection as a 2-D GEMM."""
        y = tf.matmul(x2, tf.reshape(tf.cast(layer.kernel, dtype), (x2.shape[-1], -1)))
        if self._use_bias:
            y = tf.nn.bias_add(y, tf.reshape(tf.cast(layer.bias, dtype), (-1,)))
        return y
