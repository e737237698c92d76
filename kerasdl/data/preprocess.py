"""Image preprocessing shared by the training pipeline and the exported serving signatures.

One function, :func:`preprocess_images`, turns images as a source yields them (uint8 0-255, or
float in [0, 1]) into the model's input: resized to the recipe's size, converted to its channel
count, scaled to [0, 1] and optionally standardized with per-channel mean and std. Training
(``kerasdl.data.pipeline``) and export (``kerasdl.export``) both call it, so serving sees exactly
the preprocessing the model was trained with. The spec is stored in the run folder as
``preprocess.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf


@dataclass
class PreprocessSpec:
    """How raw images become model inputs.

    Args:
        image_size: ``(H, W)`` the model takes.
        channels: 1 (grayscale) or 3 (RGB).
        mean: per-channel mean subtracted after scaling to [0, 1] (empty: no standardization).
        std: per-channel standard deviation divided after subtracting ``mean``.
        class_names: the label names, index = class id.
        interpolation: the resize filter, ``bilinear`` or ``bicubic`` (both antialiased when
            shrinking, as PIL's and torchvision's resizes of PIL images).
    """

    image_size: tuple[int, int]
    channels: int
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    interpolation: str = "bilinear"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (int(self.image_size[0]), int(self.image_size[1]), int(self.channels))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    def save(self, path: str | Path) -> None:
        """Write ``preprocess.json`` atomically (a run killed meanwhile leaves no half file)."""
        from kerasdl import io

        io.write_json(path, self.to_json(), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> PreprocessSpec:
        d = json.loads(Path(path).read_text())
        d["image_size"] = tuple(d["image_size"])
        return cls(**d)  # a preprocess.json written before ``interpolation`` reads as bilinear

    def unit(self) -> PreprocessSpec:
        """This spec without standardization: size, channels and filter only ([0, 1] out)."""
        return PreprocessSpec(
            self.image_size, self.channels, [], [], self.class_names, self.interpolation
        )


def to_unit_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 images to float32 in [0, 1]; float images are taken as already in [0, 1]."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def preprocess_images(images: tf.Tensor, spec: PreprocessSpec) -> tf.Tensor:
    """Resize, convert channels, scale and standardize images (graph-mode safe).

    Args:
        images: ``(H, W, C)`` or ``(B, H, W, C)``, uint8 (0-255) or float ([0, 1]).
        spec: the run's preprocessing spec.

    Returns:
        float32 images of shape ``(..., spec.image_size, spec.channels)``.
    """
    x = to_unit_float(images)
    h, w = int(spec.image_size[0]), int(spec.image_size[1])
    static = x.shape
    if static[-3] != h or static[-2] != w:
        x = tf.image.resize(x, (h, w), method=spec.interpolation, antialias=True)
        x = tf.clip_by_value(x, 0.0, 1.0)
    c_in = static[-1]
    if c_in != spec.channels:
        if c_in == 3 and spec.channels == 1:
            x = tf.image.rgb_to_grayscale(x)
        elif c_in == 1 and spec.channels == 3:
            x = tf.image.grayscale_to_rgb(x)
        elif c_in == 4 and spec.channels == 3:
            x = x[..., :3]
        elif c_in == 4 and spec.channels == 1:
            x = tf.image.rgb_to_grayscale(x[..., :3])
        else:
            raise ValueError(f"Cannot convert {c_in} channels to {spec.channels}.")
    if spec.mean:
        x = (x - tf.constant(spec.mean, tf.float32)) / tf.constant(spec.std, tf.float32)
    return x
