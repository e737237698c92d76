"""Tiny models for the tests: Vision Transformers and MAEs with a few thousand weights on 8x8
images, and the benchmark's smallest case (a one-conv SimpleCNN).

Imported as a module (pytest puts ``tests/`` on the path, as for ``conftest``).
"""

from __future__ import annotations

from typing import Any

from kerasdl.methods.mae import MAE
from kerasdl.models.vit import VisionTransformer

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
