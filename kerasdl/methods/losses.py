"""Losses and schedules shared by the semi- and self-supervised methods.

All functions take and return tensors (``keras.ops``) and compute in float32 whatever the
mixed-precision policy, so that softmaxes, similarities and ramp-ups keep their precision.

References:
    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR,
    NT-Xent), ICML 2020. He et al., "Momentum Contrast for Unsupervised Visual Representation
    Learning" (MoCo, InfoNCE with a queue), CVPR 2020. Laine & Aila, "Temporal Ensembling for
    Semi-Supervised Learning", ICLR 2017 (Gaussian ramp-up, squared-difference consistency).
    Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017. He et al., "Masked
    Autoencoders Are Scalable Vision Learners", CVPR 2022 (loss on masked patches only).
"""

from __future__ import annotations

import keras
from keras import ops


def _f32(x):
    return ops.cast(x, "float32")


def soft_cross_entropy(targets, logits):
    """Per-example cross-entropy between (one-hot or soft) ``targets`` and ``logits``: ``(B,)``."""
    return keras.losses.categorical_crossentropy(_f32(targets), _f32(logits), from_logits=True)


def hard_cross_entropy(labels, logits):
    """Per-example cross-entropy with integer ``labels``: ``(B,)``."""
    return keras.losses.sparse_categorical_crossentropy(labels, _f32(logits), from_logits=True)


def softmax_mse(logits_a, logits_b):
    """Per-example squared difference of the softmax outputs, averaged over classes: ``(B,)``.

    Laine & Aila (2017) and Tarvainen & Valpola (2017) use ``||softmax(a) - softmax(b)||^2 / C``.
    """
    pa = ops.softmax(_f32(logits_a), axis=-1)
    pb = ops.softmax(_f32(logits_b), axis=-1)
    return ops.mean(ops.square(pa - pb), axis=-1)


def sigmoid_rampup(step, length):
    """The Gaussian ramp-up ``exp(-5 (1 - t)^2)``, ``t = clip(step / length, 0, 1)``.

    Equals 1 for ``length <= 0``. Laine & Aila 2017, section 3; Tarvainen & Valpola 2017, appendix.
    """
    if length <= 0:
        return ops.convert_to_tensor(1.0, "float32")
    t = ops.clip(_f32(step) / float(length), 0.0, 1.0)
    return ops.exp(-5.0 * ops.square(1.0 - t))


def linear_rampup(step, start, end):
    """0 before ``start``, linear to 1 at ``end``, 1 after (Lee 2013's alpha(t) schedule)."""
    if end <= start:
        return ops.cast(_f32(step) >= float(start), "float32")
    return ops.clip((_f32(step) - float(start)) / float(end - start), 0.0, 1.0)


def l2_normalize(x, axis: int = -1):
    return ops.normalize(_f32(x), axis=axis, order=2)


def nt_xent(z1, z2, temperature: float = 0.5):
    """NT-Xent (normalized temperature-scaled cross-entropy) of SimCLR, mean over the 2N views.

    Each of the ``2N`` projections is classified against the other ``2N - 1``; its positive is
    the other view of the same image.

    Args:
        z1, z2: ``(N, D)`` projections of the two views (row ``i`` of both = image ``i``).
        temperature: the softmax temperature tau.

    Returns:
        ``(loss, logits, labels)``: the scalar loss, the ``(2N, 2N)`` similarity logits (self
        similarity set to a large negative value) and the index of each row's positive.

    Reference:
        Chen et al. 2020, Algorithm 1 and equation (1).
    """
    z = l2_normalize(ops.concatenate([z1, z2], axis=0))  # (2N, D)
    n2 = ops.shape(z)[0]
    n = n2 // 2
    logits = ops.matmul(z, ops.transpose(z)) / temperature  # (2N, 2N)
    logits = logits - 1e9 * ops.eye(n2, dtype="float32")
    labels = ops.concatenate([ops.arange(n) + n, ops.arange(n)], axis=0)
    loss = ops.mean(hard_cross_entropy(labels, logits))
    return loss, logits, labels


def info_nce(q, k, queue, temperature: float = 0.2):
    """InfoNCE of MoCo: each query against its key (index 0) and the queue of negatives.

    Args:
        q: ``(N, D)`` query projections.
        k: ``(N, D)`` key projections (no gradient is taken through them).
        queue: ``(K, D)`` L2-normalized negative keys.
        temperature: the softmax temperature (0.2 in MoCo v2).

    Returns:
        ``(loss, logits)``: the scalar loss and the ``(N, 1 + K)`` logits, positive first.

    Reference:
        He et al. 2020, equation (1) and Algorithm 1; Chen et al. 2020 (MoCo v2), temperature 0.2.
    """
    q = l2_normalize(q)
    k = ops.stop_gradient(l2_normalize(k))
    l_pos = ops.sum(q * k, axis=-1, keepdims=True)  # (N, 1)
    l_neg = ops.matmul(q, ops.transpose(ops.stop_gradient(_f32(queue))))  # (N, K)
    logits = ops.concatenate([l_pos, l_neg], axis=1) / temperature  # (N, 1 + K)
    labels = ops.zeros((ops.shape(q)[0],), dtype="int32")
    return ops.mean(hard_cross_entropy(labels, logits)), logits


def patch_norm_stats(target, epsilon: float = 1e-6):
    """Per-patch ``(mean, std)`` of MAE's ``norm_pix_loss`` target: ``(B, N, 1)`` each.

    As ``forward_loss`` of facebookresearch/mae: ``target.var(dim=-1)`` is PyTorch's unbiased
    variance (divided by ``P - 1``), and ``std = (var + 1e-6) ** 0.5``.
    """
    target = _f32(target)
    n = ops.cast(ops.shape(target)[-1], "float32")
    mean = ops.mean(target, axis=-1, keepdims=True)
    var = ops.sum(ops.square(target - mean), axis=-1, keepdims=True) / (n - 1.0)
    return mean, ops.sqrt(var + epsilon)


def masked_patch_mse(pred, target, mask, norm_pix: bool = False):
    """MAE reconstruction loss: per-patch MSE averaged over the masked patches only.

    Args:
        pred: ``(B, N, P)`` predicted patch pixels.
        target: ``(B, N, P)`` true patch pixels.
        mask: ``(B, N)``, 1 for masked (removed) patches, 0 for visible ones.
        norm_pix: normalize each target patch by its mean and unbiased variance (MAE's
            ``norm_pix_loss``; see :func:`patch_norm_stats`).

    Reference:
        He et al. 2022, section 3 ("Reconstruction target"); facebookresearch/mae
        ``models_mae.py`` ``forward_loss``.
    """
    pred, target, mask = _f32(pred), _f32(target), _f32(mask)
    if norm_pix:
        mean, std = patch_norm_stats(target)
        target = (target - mean) / std
    per_patch = ops.mean(ops.square(pred - target), axis=-1)  # (B, N)
    return ops.sum(per_patch * mask) / ops.maximum(ops.sum(mask), 1.0)
