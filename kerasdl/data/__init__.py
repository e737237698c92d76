"""Data: sources, preprocessing and the tf.data pipeline.

>>> from kerasdl.config import DataConfig
>>> bundle = load_data(DataConfig(source="digits", image_size=16), seed=0)
>>> bundle.num_classes, bundle.spec.input_shape
(10, (16, 16, 1))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kerasdl.config import DataConfig

if TYPE_CHECKING:  # TensorFlow loads on first use: importing kerasdl.data.augment_specs (the
    # recipe schema's augment checks) must not import it
    import tensorflow as tf

    from kerasdl.data.preprocess import PreprocessSpec


@dataclass
class DataBundle:
    """The splits of a recipe's data, ready for batching.

    Attributes:
        splits: ``train``/``val``/``test`` unbatched datasets of ``(float32 image in [0, 1] at the
            model's size and channels, int64 label)``; standardization is left to the pipeline.
        spec: the preprocessing spec (saved in the run folder, used by export).
        sizes: examples per split.
    """

    splits: dict[str, tf.data.Dataset]
    spec: PreprocessSpec
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.spec.class_names)

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names


def load_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Load the source named by ``cfg.source`` and resize/convert it to the recipe's input.

    Raises:
        kerasdl.UserError: missing files, unknown dataset names, corrupt data.
    """
    import tensorflow as tf

    from kerasdl.data.preprocess import PreprocessSpec, preprocess_images, to_unit_float
    from kerasdl.data.sources import SOURCES

    raw = SOURCES[cfg.source](cfg, seed)
    h, w, c = raw.image_shape if len(raw.image_shape) == 3 else (*raw.image_shape, 1)
    size = cfg.size_tuple() or (int(h), int(w))
    spec = PreprocessSpec(
        image_size=size,
        channels=cfg.channels or int(c),
        mean=list(cfg.mean),
        std=list(cfg.std),
        class_names=list(raw.class_names),
    )
    # Standardization happens after augmentation in the pipeline, so the splits stay in [0, 1].
    unit_spec = PreprocessSpec(size, spec.channels, [], [], spec.class_names)

    def prep(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if x.shape.rank == 2:
            x = x[..., None]
        return preprocess_images(to_unit_float(x), unit_spec), y

    splits = {k: ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE) for k, ds in raw.splits.items()}
    return DataBundle(splits, spec, dict(raw.sizes))


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
