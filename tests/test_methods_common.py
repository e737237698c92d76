"""Tiny inputs shared by the method tests (imported by test_methods_*.py; holds no tests)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import kerasdl

SEMI = ["pi_model", "mean_teacher", "pseudo_label", "fixmatch"]
SELF = ["simclr", "moco", "mae"]


def tiny_vit(num_classes: int = 0):
    """A registry ViT small enough for a test step (MAE's encoder)."""
    return kerasdl.create_model(
        "vit_ti_16",
        num_classes=num_classes,
        input_shape=(8, 8, 1),
        patch_size=2,
        hidden_dim=8,
        num_layers=1,
        num_heads=2,
        mlp_dim=16,
        position_embedding="sincos",
        weight_init="mae",
    )


def tiny_backbone(name: str):
    classes = 3 if name in SEMI else 0
    if name == "mae":
        return tiny_vit(classes)
    return kerasdl.create_model(
        "simple_cnn", num_classes=classes, input_shape=(8, 8, 1), filters=[4, 8]
    )


def tiny_params(name: str) -> dict:
    return {
        "moco": {"queue_size": 16, "projection_dim": 8},
        "simclr": {"projection_dim": 8},
        "mae": dict(decoder_dim=8, decoder_depth=1, decoder_heads=2),
        "fixmatch": {"mu": 2, "threshold": 0.0},
        "pseudo_label": {"threshold": 0.0, "rampup_start": 0, "rampup_end": 0},
        "pi_model": {"rampup_steps": 0},
        "mean_teacher": {"rampup_steps": 0},
    }[name]


def tiny_data(name: str, batch: int = 4) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """``(train, val)`` datasets in the method's format (random images, 3 classes)."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, 8, 8, 1)).astype("float32")
    u = rng.random((2 * batch, 8, 8, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(batch) % 3]
    if name in SEMI:
        views = (u, u[::-1]) if name != "pseudo_label" else (u,)
        if name == "fixmatch":
            views = (u, u[::-1])
        train = ((x, y), views)
        val = (x, y)
    elif name == "mae":
        train = val = x
    else:
        train = val = (x, x[::-1])
    return (
        tf.data.Dataset.from_tensors(train).repeat(2),
        tf.data.Dataset.from_tensors(val),
    )
