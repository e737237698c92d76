"""Hand-written batch augmentations that neither Keras core nor keras-cv provide as published.

Each function takes a batch ``(B, H, W, C)`` float32 in [0, 1] and a ``tf.random.Generator`` and
draws its randomness per image, so it runs inside ``tf.data.Dataset.map`` in graph mode.
"""

from __future__ import annotations

import tensorflow as tf


def _col(v: tf.Tensor) -> tf.Tensor:
    return tf.reshape(v, (-1, 1, 1, 1))


def pad_and_crop(
    x: tf.Tensor, gen: tf.random.Generator, padding: int, mode: str, fill_value: float
) -> tf.Tensor:
    """Random crop with padding: pad every side by ``padding`` then crop back to ``H x W`` at a
    per-image offset uniform in ``[0, 2 * padding]`` (the CIFAR recipe of He et al. 2016).

    Keras ``RandomCrop`` draws one offset per batch, hence this gather-based version.
    """
    h, w = x.shape[1], x.shape[2]
    n = tf.shape(x)[0]
    paddings = [[0, 0], [padding, padding], [padding, padding], [0, 0]]
    padded = tf.pad(x, paddings, mode=mode.upper(), constant_values=fill_value)
    dy = gen.uniform((n,), maxval=2 * padding + 1, dtype=tf.int32)
    dx = gen.uniform((n,), maxval=2 * padding + 1, dtype=tf.int32)
    rows = dy[:, None] + tf.range(h)[None, :]
    cols = dx[:, None] + tf.range(w)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def pca_color(
    x: tf.Tensor, gen: tf.random.Generator, eigvals: tf.Tensor, eigvecs: tf.Tensor, std: float
) -> tf.Tensor:
    """AlexNet colour augmentation: add ``[p_1..p_C] [a_1 l_1 .. a_C l_C]^T`` to every pixel.

    ``p_i``, ``l_i`` are the eigenvectors (columns of ``eigvecs``) and eigenvalues of the training
    set's ``C x C`` covariance of pixel values; ``a_i ~ N(0, std)`` is drawn once per image.
    The result is clipped to [0, 1].

    Reference: Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional
    Neural Networks", NeurIPS 2012, Section 4.1.
    """
    n = tf.shape(x)[0]
    alpha = gen.normal((n, eigvals.shape[0]), stddev=std)
    delta = tf.matmul(alpha * eigvals[None, :], eigvecs, transpose_b=True)  # (B, C)
    return tf.clip_by_value(x + delta[:, None, None, :], 0.0, 1.0)


def gaussian_noise(x: tf.Tensor, gen: tf.random.Generator, std: float, clip: bool) -> tf.Tensor:
    """Add i.i.d. ``N(0, std^2)`` noise to every value (clipped to [0, 1] when ``clip``)."""
    out = x + gen.normal(tf.shape(x), stddev=std)
    return tf.clip_by_value(out, 0.0, 1.0) if clip else out


def salt_and_pepper(
    x: tf.Tensor, gen: tf.random.Generator, amount: float, salt_ratio: float
) -> tf.Tensor:
    """Set a fraction ``amount`` of pixel positions (all channels) to 1 (salt, with probability
    ``salt_ratio``) or 0 (pepper), as scikit-image's ``random_noise(mode="s&p")``."""
    shape = tf.shape(x)
    u = gen.uniform(tf.stack([shape[0], shape[1], shape[2], 1]))
    s = gen.uniform(tf.stack([shape[0], shape[1], shape[2], 1]))
    value = tf.where(s < salt_ratio, 1.0, 0.0)
    return tf.where(u < amount, tf.broadcast_to(value, shape), x)


def box_mask(
    y0: tf.Tensor, x0: tf.Tensor, y1: tf.Tensor, x1: tf.Tensor, h: int, w: int
) -> tf.Tensor:
    """``(B, H, W, 1)`` mask, True inside each image's integer box ``[y0, y1) x [x0, x1)``."""
    rows = tf.range(h)[None, :, None, None]
    cols = tf.range(w)[None, None, :, None]
    return (rows >= _col(y0)) & (rows < _col(y1)) & (cols >= _col(x0)) & (cols < _col(x1))


def random_erasing(
    x: tf.Tensor,
    gen: tf.random.Generator,
    area: tuple[float, float],
    ratio: tuple[float, float],
    fill: str | float,
    attempts: int,
) -> tf.Tensor:
    """Random Erasing (Zhong et al.'s Algorithm 1) applied to every image of the batch.

    Per attempt: ``S_e ~ U(s_l, s_h) * H * W``, ``r_e ~ U(r_1, r_2)``, ``H_e = sqrt(S_e r_e)``,
    ``W_e = sqrt(S_e / r_e)``, corner ``(x_e, y_e)`` uniform in the image; the first attempt whose
    rectangle fits inside the image is erased with uniform random values in [0, 1] (``fill:
    random``, the paper's default) or a constant. After ``attempts`` misses the image is kept.

    Reference: Zhong, Zheng, Kang, Li, Yang, "Random Erasing Data Augmentation", AAAI 2020.
    """
    h, w = x.shape[1], x.shape[2]
    n = tf.shape(x)[0]
    s_e = gen.uniform((n, attempts), area[0], area[1]) * float(h * w)
    r_e = gen.uniform((n, attempts), ratio[0], ratio[1])
    he = tf.cast(tf.round(tf.sqrt(s_e * r_e)), tf.int32)
    we = tf.cast(tf.round(tf.sqrt(s_e / r_e)), tf.int32)
    ye = gen.uniform((n, attempts), maxval=h, dtype=tf.int32)
    xe = gen.uniform((n, attempts), maxval=w, dtype=tf.int32)
    fits = (he >= 1) & (we >= 1) & (ye + he <= h) & (xe + we <= w)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(fits, axis=1)

    def pick(v: tf.Tensor) -> tf.Tensor:
        return tf.gather(v, first, batch_dims=1)

    y0, x0 = pick(ye), pick(xe)
    mask = box_mask(y0, x0, y0 + pick(he), x0 + pick(we), h, w) & _col(found)
    if fill == "random":
        value = gen.uniform(tf.shape(x))
    else:
        value = tf.fill(tf.shape(x), tf.cast(fill, x.dtype))
    return tf.where(mask, value, x)


def sample_beta(gen: tf.random.Generator, n: tf.Tensor, alpha: float) -> tf.Tensor:
    """``(n,)`` draws of Beta(alpha, alpha) = G1 / (G1 + G2) with G ~ Gamma(alpha)."""
    seeds = gen.make_seeds(2)
    g1 = tf.random.stateless_gamma((n,), seed=seeds[:, 0], alpha=alpha)
    g2 = tf.random.stateless_gamma((n,), seed=seeds[:, 1], alpha=alpha)
    return g1 / tf.maximum(g1 + g2, 1e-12)


def cutmix(
    x: tf.Tensor, y: tf.Tensor, gen: tf.random.Generator, alpha: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix with a partner from a random permutation of the batch, per image.

    ``lambda ~ Beta(alpha, alpha)``; box centre ``(r_x, r_y)`` uniform over the image, size
    ``W sqrt(1 - lambda) x H sqrt(1 - lambda)``, clipped to the image (the reference code's
    integer box); the label weight of the image's own label is then recomputed as
    ``1 - (pasted box area) / (H W)``, i.e. exactly the fraction of pixels that were kept.

    Reference: Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train Strong
    Classifiers with Localizable Features", ICCV 2019 (Algorithm A1).
    """
    h, w = x.shape[1], x.shape[2]
    n = tf.shape(x)[0]
    lam = sample_beta(gen, n, alpha)
    cut = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.floor(cut * h), tf.int32)
    cut_w = tf.cast(tf.floor(cut * w), tf.int32)
    cy = gen.uniform((n,), maxval=h, dtype=tf.int32)
    cx = gen.uniform((n,), maxval=w, dtype=tf.int32)
    y0 = tf.clip_by_value(cy - cut_h // 2, 0, h)
    y1 = tf.clip_by_value(cy + cut_h // 2, 0, h)
    x0 = tf.clip_by_value(cx - cut_w // 2, 0, w)
    x1 = tf.clip_by_value(cx + cut_w // 2, 0, w)
    perm = tf.argsort(gen.uniform((n,)))
    mask = box_mask(y0, x0, y1, x1, h, w)
    mixed = tf.where(mask, tf.gather(x, perm), x)
    kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / float(h * w)
    labels = kept[:, None] * y + (1.0 - kept[:, None]) * tf.gather(y, perm)
    return mixed, labels
