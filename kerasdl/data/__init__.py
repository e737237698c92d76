"""Data: sources, preprocessing and the tf.data pipeline.

>>> from kerasdl.config import DataConfig
>>> bundle = load_data(DataConfig(source="digits", image_size=16), seed=0)
>>> bundle.num_classes, bundle.spec.input_shape
(10, (16, 16, 1))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kerasdl.config import DataConfig

if TYPE_CHECKING:  # TensorFlow loads on first use: importing kerasdl.data.augment_specs (the
    # recipe schema's augment checks) must not import it
    import numpy as np
    import tensorflow as tf

    from kerasdl.data.preprocess import PreprocessSpec


#: ``data.cache`` unset: a streamed split is cached when its decoded size is at most this
AUTO_CACHE_BYTES = 2 * 1024**3


@dataclass
class DataBundle:
    """The splits of a recipe's data, ready for batching.

    Attributes:
        splits: ``train``/``val``/``test`` unbatched datasets of ``(float32 image in [0, 1] at the
            model's size and channels, int64 label)``; standardization is left to the pipeline.
        spec: the preprocessing spec (saved in the run folder, used by export).
        sizes: examples per split (where known without a pass over a streamed split).
        in_memory: the source holds its examples in memory (digits, npz, synthetic); false for
            the streamed sources (tfds, folder).
        random_train: the training split draws a random crop per image on every pass
            (``data.crop.train: random_resized``): it must not be cached.
        label_reader: ``label_reader(split)`` -> labels in order without decoding images.
    """

    splits: dict[str, tf.data.Dataset]
    spec: PreprocessSpec
    sizes: dict[str, int] = field(default_factory=dict)
    in_memory: bool = True
    random_train: bool = False
    label_reader: Callable[[str], np.ndarray] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.spec.class_names)

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    def size(self, split: str) -> int:
        """Examples in ``split``: known from the source, else counted by one pass over it."""
        if split in self.sizes:
            return int(self.sizes[split])
        return int(self.splits[split].reduce(0, lambda n, _: n + 1))

    def labels(self, split: str) -> np.ndarray:
        """The labels of ``split`` in the split's order (read without decoding images where the
        source can; else by one pass over the split)."""
        import numpy as np

        if self.label_reader is not None:
            return np.asarray(self.label_reader(split), np.int64)
        ys = self.splits[split].map(lambda x, y: y).batch(4096).as_numpy_iterator()
        return np.concatenate([np.asarray(y, np.int64) for y in ys] or [np.zeros(0, np.int64)])

    def cacheable(self, split: str, requested: bool | None = None) -> bool:
        """Whether to keep ``split``'s decoded examples in memory (``data.cache``; unset: the
        in-memory sources, or a streamed split of known decoded size up to
        :data:`AUTO_CACHE_BYTES` without a random crop)."""
        if split == "train" and self.random_train:
            return False
        if requested is not None:
            return requested
        if self.in_memory:
            return True
        n = self.sizes.get(split)
        h, w, c = self.spec.input_shape
        return n is not None and n * h * w * c * 4 <= AUTO_CACHE_BYTES


def load_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Load the source named by ``cfg.source`` and resize/convert it to the recipe's input.

    The streamed sources (tfds, folder) are decoded and cropped here, lazily, in parallel
    (:func:`kerasdl.data.decode.decode_split`, ``data.crop``); the in-memory ones are resized.

    Raises:
        kerasdl.UserError: missing files, unknown dataset names, corrupt data.
    """
    import tensorflow as tf

    from kerasdl.data.decode import decode_split
    from kerasdl.data.preprocess import PreprocessSpec, preprocess_images, to_unit_float
    from kerasdl.data.sources import SOURCES
    from kerasdl.errors import UserError

    raw = SOURCES[cfg.source](cfg, seed)
    h, w, c = raw.image_shape if len(raw.image_shape) == 3 else (*raw.image_shape, 1)
    size = cfg.size_tuple()
    if size is None:
        if h is None or w is None:
            raise UserError(
                f"data.image_size: the images of this {cfg.source} source may differ in size "
                "(a tfds dataset of varying sizes, or a folder read with verify_images: false); "
                "set data.image_size (e.g. 224, with data.crop for ImageNet-style crops)"
            )
        size = (int(h), int(w))
    channels = cfg.channels or int(c)
    if len(cfg.mean) > 1 and len(cfg.mean) != channels:  # (checked with the recipe when known)
        raise UserError(
            f"data.mean and data.std need one value per channel (or one for all): "
            f"{len(cfg.mean)} given for the {channels} channel(s) of this {cfg.source} data"
        )
    spec = PreprocessSpec(
        image_size=size,
        channels=channels,
        mean=list(cfg.mean),
        std=list(cfg.std),
        class_names=list(raw.class_names),
        interpolation=cfg.interpolation,
    )
    if raw.encoded:
        splits = {}
        for k, ds in raw.splits.items():
            mode = cfg.crop.train if k == "train" else cfg.crop.eval
            ds = decode_split(ds, (h, w, c), spec, cfg.crop, mode, seed)
            splits[k] = ds.ignore_errors() if raw.skip_errors else ds
    else:
        # Standardization happens after augmentation in the pipeline, so the splits stay in [0, 1].
        unit_spec = spec.unit()

        def prep(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            if x.shape.rank == 2:
                x = x[..., None]
            return preprocess_images(to_unit_float(x), unit_spec), y

        splits = {
            k: ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE) for k, ds in raw.splits.items()
        }
    return DataBundle(
        splits,
        spec,
        dict(raw.sizes),
        in_memory=raw.in_memory,
        random_train=raw.encoded and cfg.crop.train == "random_resized",
        label_reader=raw.labels,
    )


def __getattr__(name: str) -> Any:
    """``PreprocessSpec``, ``preprocess_images`` and ``AUTOTUNE``, imported on first use."""
    if name in ("PreprocessSpec", "preprocess_images"):
        from kerasdl.data import preprocess

        return getattr(preprocess, name)
    if name == "AUTOTUNE":
        import tensorflow as tf

        return tf.data.AUTOTUNE
    raise AttributeError(f"module 'kerasdl.data' has no attribute {name!r}")


__all__ = ["DataBundle", "PreprocessSpec", "load_data", "preprocess_images"]
