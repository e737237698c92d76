"""Tiny models for the tests: Vision Transformers and MAEs with a few thousand weights on 8x8
images, and the benchmark's smallest case (a one-conv SimpleCNN).

Imported as a module (pytest puts ``tests/`` on the path, as for ``conftest``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kerasdl.methods.mae import MAE
from kerasdl.models.vit import VisionTransformer


def write_image_folder(root: Path, per_class: int, size: tuple[int, int]) -> None:
    """An image folder ``root/{cat,dog}/i.png`` of random RGB images, plus a file with JPEG magic
    that is not an image (``dog/broken.jpg``)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")


#: a benchmark case (``kerasdl.bench.Case`` keywords) that runs in a second
TINY_CASE: dict[str, Any] = dict(
    model="simple_cnn",
    input_size=8,
    channels=1,
    batch_size=8,
    model_kwargs={"filters": [4], "convs_per_stage": 1},
    warmup=1,
)


def tiny_vit(side: int = 8, channels: int = 1, **kw: Any) -> VisionTransformer:
    """A 2-layer ViT with 2x2 patches on ``side x side x channels`` inputs; ``kw`` overrides."""
    args: dict[str, Any] = dict(
        num_classes=3,
        input_shape=(side, side, channels),
        patch_size=2,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
        mlp_dim=32,
    )
    return VisionTransformer(**{**args, **kw})


def tiny_mae(input_shape: tuple[int, int, int] = (8, 8, 1), **kw: Any) -> MAE:
    """An MAE that builds its own one-block ViT encoder (dim 8) and decoder; ``kw`` overrides."""
    args: dict[str, Any] = dict(
        input_shape=input_shape,
        patch_size=2,
        dim=8,
        depth=1,
        num_heads=2,
        decoder_dim=8,
        decoder_depth=1,
        decoder_heads=2,
        seed=0,
    )
    return MAE(None, **{**args, **kw})
