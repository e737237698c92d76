"""Evaluation protocols for learned representations: linear probe, k-NN, fine-tuning.

* **Linear probe**: frozen pre-logits features (``kerasdl.models.base.feature_extractor``),
  standardized (MAE's "BatchNorm without affine" before the linear layer), then a multinomial
  logistic regression fitted with L-BFGS (scikit-learn), as in SimCLR's linear evaluation.
* **k-NN**: the weighted k-nearest-neighbour classifier of Wu et al. (2018): cosine similarity
  on L2-normalized features, the ``k`` nearest training examples vote with weight
  ``exp(sim / T)`` (k = 20, T = 0.07 here; 200 neighbours on ImageNet).
* **Fine-tuning**: the backbone with a new linear head trained end to end with ``fit``.

References:
    Chen et al. 2020 (SimCLR, linear evaluation protocol); He et al. 2022 (MAE, linear probing
    with a non-affine BatchNorm); Wu, Xiong, Yu & Lin, "Unsupervised Feature Learning via
    Non-Parametric Instance Discrimination", CVPR 2018 (weighted k-NN).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdl.models.base import PRE_LOGITS, feature_extractor
from kerasdl.training.single_trace import create_optimizer_variables


def encoder_of(model: keras.Model) -> keras.Model:
    """The feature model (input -> pre-logits) of a classifier, or ``model`` itself."""
    try:
        model.get_layer(PRE_LOGITS)
    except ValueError:
        return model
    return feature_extractor(model)


def arrays(data, standardize=None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` arrays from an unbatched ``(image, label)`` dataset or an array pair."""
    if not isinstance(data, tf.data.Dataset):
        x, y = data
        x, y = np.asarray(x, np.float32), np.asarray(y)
    else:
        xs, ys = [], []
        for xb, yb in data.batch(1024).as_numpy_iterator():
            xs.append(xb)
            ys.append(yb)
        x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys)
    if y.ndim == 2:
        y = y.argmax(-1)
    if standardize is not None:
        x = np.asarray(standardize(x))
    return x, y.astype(np.int64)


def extract_features(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Frozen pre-logits features of ``x`` (inference mode), float32 ``(N, D)``.

    ``x`` is padded to whole batches (and the padding's features dropped), so that every batch
    has one shape and Keras traces its predict step once per model, not again for a ragged last
    batch.
    """
    enc = encoder_of(model)
    n = len(x)
    batch_size = max(1, min(batch_size, n))
    pad = (-n) % batch_size
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    feats = enc.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(feats, np.float32).reshape(len(x), -1)[:n]


def linear_probe(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    l2: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Accuracy of a logistic regression (L-BFGS, inverse L2 strength ``1 / l2``) on features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_feats)
    clf = LogisticRegression(C=1.0 / l2, max_iter=max_iter)
    clf.fit(scaler.transform(train_feats), train_labels)
    return float((clf.predict(scaler.transform(test_feats)) == test_labels).mean())


def knn_accuracy(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Accuracy of the weighted k-NN classifier (Wu et al. 2018) with cosine similarity."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    tr = train_feats / np.maximum(np.linalg.norm(train_feats, axis=1, keepdims=True), 1e-12)
    te = test_feats / np.maximum(np.linalg.norm(test_feats, axis=1, keepdims=True), 1e-12)
    k = min(k, len(tr))
    correct = 0
    for s in range(0, len(te), chunk):
        sim = te[s : s + chunk] @ tr.T  # (n, N_train)
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, idx, axis=1)
        w = np.exp(top / temperature)
        votes = np.zeros((len(sim), num_classes))
        np.add.at(votes, (np.arange(len(sim))[:, None], train_labels[idx]), w)
        correct += int((votes.argmax(1) == test_labels[s : s + chunk]).sum())
    return correct / len(te)


def fine_tune(
    model: keras.Model,
    num_classes: int,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> float:
    """Test accuracy after training the backbone plus a new linear head end to end (Adam).

    The backbone's weights are changed in place; pass a copy to keep the original.
    """
    enc = encoder_of(model)
    inputs = keras.Input(enc.input_shape[1:])
    logits = keras.layers.Dense(num_classes, dtype="float32", name="probe_head")(enc(inputs))
    clf = keras.Model(inputs, logits, name="fine_tune")
    clf.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    create_optimizer_variables(clf)  # with the metric's variables made: one trace of the step
    keras.utils.set_random_seed(seed)
    clf.fit(*train, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    return float(clf.evaluate(*test, batch_size=256, verbose=0, return_dict=True)["accuracy"])


def run_probes(
    model: keras.Model,
    train,
    test,
    protocols: tuple[str, ...] = ("linear", "knn"),
    labels_per_class: int | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    standardize=None,
    finetune_epochs: int = 30,
) -> dict[str, Any]:
    """Run the requested protocols; ``labels_per_class`` restricts the training labels.

    Args:
        model: a kerasdl classifier / backbone (any model with a ``pre_logits`` layer, or a
            feature model).
        train, test: unbatched ``(image, label)`` datasets or ``(x, y)`` arrays.
        protocols: any of ``linear``, ``knn``, ``finetune``.
        labels_per_class: keep this many training labels per class (stratified, seeded).
        seed: seed of the label choice and of fine-tuning.
        num_classes: for fine-tuning (default: from the labels).
        standardize: ``x -> (x - mean) / std`` applied to the images first.
        finetune_epochs: epochs of fine-tuning.

    Returns:
        ``{"linear": acc, "knn": acc, "finetune": acc, "train_examples": n, ...}``.
    """
    from kerasdl.data.ssl import choose_labelled

    x_tr, y_tr = arrays(train, standardize)
    x_te, y_te = arrays(test, standardize)
    if labels_per_class:
        keep = choose_labelled(y_tr, labels_per_class, seed)
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    out: dict[str, Any] = {"train_examples": len(x_tr), "test_examples": len(x_te)}
    if {"linear", "knn"} & set(protocols):
        both = extract_features(model, np.concatenate([x_tr, x_te]))  # one predict call
        f_tr, f_te = both[: len(x_tr)], both[len(x_tr) :]
        if "linear" in protocols:
            out["linear"] = linear_probe(f_tr, y_tr, f_te, y_te)
        if "knn" in protocols:
            out["knn"] = knn_accuracy(f_tr, y_tr, f_te, y_te)
    if "finetune" in protocols:
        k = num_classes or int(max(y_tr.max(), y_te.max())) + 1
        out["finetune"] = fine_tune(
            model, k, (x_tr, y_tr), (x_te, y_te), epochs=finetune_epochs, seed=seed
        )
    return out
