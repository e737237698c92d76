"""What differs between kinds of training method, as objects the rest of kerasdl calls.

A method's row in the method table (:mod:`kerasdl.methods`) names its class, its parameter
model and its kind. The kind knows how such a method is built around a backbone, which data it
trains on, how its run is monitored, what the run keeps beside ``best.keras`` and how the result
is measured; nothing else in kerasdl compares a kind's name:

* :class:`SemiSupervised` (Pi-model, Mean Teacher, pseudo-label, FixMatch): a classifier trained
  on a few labels plus an unlabelled stream; measured by test accuracy.
* :class:`Contrastive` (SimCLR, MoCo): a backbone trained on two views of every image; measured by
  the probes of ``method.probe_protocols`` on the frozen backbone.
* :class:`MaskedImage` (MAE): a ViT trained to reconstruct masked patches; measured by the probes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from kerasdl.methods.params import _Params


@dataclass(frozen=True)
class MethodData:
    """The data a method works on: unbatched ``(image, label)`` splits in ``[0, 1]``, the batch
    size, the class count, the seed and the standardization applied after the views."""

    splits: dict[str, Any]
    batch_size: int
    num_classes: int
    seed: int = 0
    mean: list[float] | None = None
    std: list[float] | None = None
    #: the recipe's data (:class:`kerasdl.data.DataBundle`), when the splits come from one: its
    #: labels are read without decoding images, and its large streamed splits are not cached
    bundle: Any = None

    def labels(self, split: str) -> Any:
        """The labels of ``split`` in order (None: read them from the split itself)."""
        return self.bundle.labels(split) if self.bundle is not None else None

    def cache(self, split: str) -> bool:
        """Whether ``split``'s batches may be cached in memory."""
        return self.bundle is None or self.bundle.cacheable(split)

    @property
    def eval_split(self) -> str:
        """The split final metrics are measured on: test, else val."""
        return "test" if "test" in self.splits else "val"

    @classmethod
    def of_task(cls, task: Any) -> MethodData:
        """The data of a recipe run (``task``: its :class:`~kerasdl.training.tasks.MethodTask`)."""
        c = task.cfg
        return cls(
            task.bundle.splits,
            c.training.batch_size,
            task.bundle.num_classes,
            c.run.seed,
            list(c.data.mean) or None,
            list(c.data.std) or None,
            task.bundle,
        )


class MethodKind:
    """The behaviour shared by the methods of one kind (see the module docstring)."""

    #: ``training.monitor: auto`` with and without a validation split
    monitor = ("val_loss", "loss")
    #: the run also keeps the pretrained backbone as ``backbone.keras``
    keeps_backbone = True
    #: the unlabelled batch is ``mu`` times the labelled one
    uses_mu = False

    def build(self, cls: type, backbone: keras.Model, num_classes: int, kw: dict) -> keras.Model:
        """The method model around ``backbone``."""
        return cls(backbone, **kw)

    def datasets(
        self, p: _Params, views: str, data: MethodData
    ) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
        """``(train, validation)`` batches of the method."""
        raise NotImplementedError

    def steps_per_epoch(self, p: _Params, train_size: int, batch_size: int) -> int:
        """Full training batches in one pass over the training split."""
        return train_size // (batch_size * (p.mu if self.uses_mu else 1))

    def evaluate(self, method: keras.Model, p: _Params, data: MethodData) -> dict[str, float]:
        """Final metrics of a trained method on the test split (val if none): the probes of
        ``method.probe_protocols`` on its frozen ``inference_model``."""
        return probe_metrics(method.inference_model, p, data)

    def run_metrics(self, task: Any, kept: keras.Model) -> dict[str, float]:
        """What a recipe run reports for the model it kept (``task``: the run's
        :class:`~kerasdl.training.tasks.MethodTask`): the probes on the kept backbone, beside the
        same probes on the same architecture at the run's initialisation (``*_random_init``),
        so that a run shows what the pretraining added."""
        data = MethodData.of_task(task)
        got = probe_metrics(kept, task.params, data)
        rnd = probe_metrics(task.initial_backbone(), task.params, data)
        got.update({f"{k}_random_init": v for k, v in rnd.items() if k.endswith("accuracy")})
        return got

    @staticmethod
    def _small_val(val: tf.data.Dataset | None, batch_size: int) -> tf.data.Dataset | None:
        if val is not None and 0 <= int(val.cardinality()) < batch_size:
            return None  # too small for one full batch of views
        return val


class SemiSupervised(MethodKind):
    monitor = ("val_accuracy", "accuracy")
    keeps_backbone = False
    uses_mu = True

    def build(self, cls: type, backbone: keras.Model, num_classes: int, kw: dict) -> keras.Model:
        return cls(backbone, num_classes, **kw)

    def datasets(self, p, views, data):
        from kerasdl.data import ssl

        d = p.data_kwargs()
        labelled, unlabelled = ssl.split_labelled(
            data.splits["train"],
            d["labels_per_class"],
            data.seed,
            d["unlabelled"],
            labels=data.labels("train"),
        )
        train = ssl.semi_supervised_dataset(
            labelled,
            unlabelled,
            data.batch_size,
            data.num_classes,
            mu=p.mu,
            views=views,
            seed=data.seed,
            mean=data.mean,
            std=data.std,
            flip=d["flip"],
        )
        return train, self._labelled("val", data) if "val" in data.splits else None

    @staticmethod
    def _labelled(split: str, data: MethodData) -> tf.data.Dataset:
        from kerasdl.data import ssl

        return ssl.labelled_batches(
            data.splits[split],
            data.batch_size,
            data.num_classes,
            data.mean,
            data.std,
            cache=data.cache(split),
        )

    def evaluate(self, method, p, data):
        ds = self._labelled(data.eval_split, data)
        out = method.evaluate(ds, verbose=0, return_dict=True)
        return {k: float(v) for k, v in out.items()}

    def run_metrics(self, task: Any, kept: keras.Model) -> dict[str, float]:
        return task.classifier_metrics(kept)  # the classifier: as a supervised run measures it


class _Unlabelled(MethodKind):
    """Kinds that train on views of every training image (labels dropped)."""

    #: the ``kerasdl.data.ssl`` function that makes the batches
    dataset_fn = ""
    #: its options for the validation batches (beyond the method's own)
    val_options: dict = {}

    def datasets(self, p, views, data):
        from kerasdl.data import ssl

        make = getattr(ssl, self.dataset_fn)
        d, bs, mean, std = p.data_kwargs(), data.batch_size, data.mean, data.std
        train = make(data.splits["train"], bs, data.seed, mean, std, **d)
        val = self._small_val(data.splits.get("val"), bs)
        if val is None:
            return train, None
        return train, make(val, bs, data.seed + 1, mean, std, **{**d, **self.val_options})


class Contrastive(_Unlabelled):
    dataset_fn = "contrastive_dataset"  # two views of every image


class MaskedImage(_Unlabelled):
    dataset_fn = "masked_image_dataset"  # augmented images; validation on plain ones
    val_options = {"view": []}  # the empty view: no augmentation

    def build(self, cls: type, backbone: keras.Model, num_classes: int, kw: dict) -> keras.Model:
        return cls(backbone, num_classes, **kw)  # the recipe's ViT is the encoder


def _streamed_features(backbone: keras.Model, ds: Any, data: MethodData) -> tuple[Any, Any]:
    """``(features, labels)`` of an unbatched ``(image, label)`` split, batch by batch: only the
    features are kept in memory, never the images (streamed sources)."""
    import numpy as np
    import tensorflow as tf

    from kerasdl.data.pipeline import standardizer
    from kerasdl.methods.probes import encoder_of

    enc = encoder_of(backbone)
    forward = tf.function(lambda x: enc(x, training=False), reduce_retracing=True)
    standardize = standardizer(list(data.mean or []), list(data.std or [])) or (lambda x: x)
    feats, labels = [], []
    for x, y in ds.batch(256).prefetch(tf.data.AUTOTUNE):
        feats.append(np.asarray(forward(standardize(x)), np.float32).reshape(len(y), -1))
        labels.append(np.asarray(y, np.int64))
    return np.concatenate(feats), np.concatenate(labels)


def _streamed_probes(backbone: keras.Model, p: _Params, data: MethodData) -> dict[str, Any]:
    """The linear and k-NN probes of :func:`kerasdl.methods.probes.run_probes` on a streamed
    source: the labelled subset chosen from the labels alone (the same seeded rule), the features
    extracted batch by batch."""
    import numpy as np
    import tensorflow as tf

    from kerasdl.data.ssl import choose_labelled
    from kerasdl.methods.probes import knn_accuracy, linear_probe

    train = data.splits["train"]
    if p.probe_labels_per_class:
        keep = np.zeros(len(data.labels("train")), bool)
        keep[choose_labelled(data.labels("train"), p.probe_labels_per_class, data.seed)] = True
        mask = tf.constant(keep)
        train = train.enumerate().filter(lambda i, xy: mask[i]).map(lambda i, xy: xy)
    f_tr, y_tr = _streamed_features(backbone, train, data)
    f_te, y_te = _streamed_features(backbone, data.splits[data.eval_split], data)
    out: dict[str, Any] = {"train_examples": len(f_tr), "test_examples": len(f_te)}
    if "linear" in p.probe_protocols:
        out["linear"] = linear_probe(f_tr, y_tr, f_te, y_te)
    if "knn" in p.probe_protocols:
        out["knn"] = knn_accuracy(f_tr, y_tr, f_te, y_te)
    return out


def probe_metrics(backbone: keras.Model, p: _Params, data: MethodData) -> dict[str, float]:
    """The probes of ``p.probe_protocols`` on a frozen backbone (test split, val if none).

    On a streamed source (tfds, folder) the linear and k-NN probes keep features, not images, in
    memory; fine-tuning (``finetune``) reads the splits into memory on any source.
    """
    from kerasdl.data.pipeline import standardize_array
    from kerasdl.methods.probes import run_probes

    streamed = data.bundle is not None and not data.bundle.in_memory
    if streamed and "finetune" not in p.probe_protocols:
        got = _streamed_probes(backbone, p, data)
    else:
        got = run_probes(
            backbone,
            data.splits["train"],
            data.splits[data.eval_split],
            protocols=tuple(p.probe_protocols),
            labels_per_class=p.probe_labels_per_class,
            seed=data.seed,
            num_classes=data.num_classes,
            standardize=lambda x: standardize_array(x, data.mean, data.std),
        )
    names = {"linear": "linear_probe_accuracy", "knn": "knn_accuracy"}
    names["finetune"] = "finetune_accuracy"
    out = {names[k]: float(got[k]) for k in p.probe_protocols}
    out["probe_train_examples"] = float(got["train_examples"])
    return out


KINDS: dict[str, MethodKind] = {
    "semi": SemiSupervised(),
    "contrastive": Contrastive(),
    "masked": MaskedImage(),
}
