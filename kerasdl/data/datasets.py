"""The recipe's batched datasets: one place that turns a data bundle into fit's input.

The supervised task trains on these; the bench, ``lr-find`` and ``evaluate`` reuse them.
"""

from __future__ import annotations

from typing import Any

from kerasdl.config import RecipeConfig
from kerasdl.data import DataBundle
from kerasdl.data.pipeline import batch_dataset, standardizer

#: ``pca_color``'s statistics come from the first this many training images (file order)
PCA_IMAGES = 50_000


def make_datasets(
    cfg: RecipeConfig, bundle: DataBundle, epoch: Any | None = None
) -> dict[str, Any]:
    """Batched train/val/test datasets of the recipe.

    ``epoch`` (a variable holding the epoch about to run) makes the training order a function of
    the seed and the epoch, so that a resumed run sees the order an uninterrupted one would.
    """
    augment = None
    if cfg.data.augment:
        from kerasdl.data.augment import build_augment
        from kerasdl.data.augment_specs import NEEDS_STATS

        stats = None
        if any(NEEDS_STATS.get(s["name"]) for s in cfg.data.augment):
            from kerasdl.data.augment import compute_pca_stats  # the statistics ops need

            # streamed, from at most PCA_IMAGES training images (all of CIFAR; a sample of
            # ImageNet's 1.28M, whose colour statistics it estimates closely)
            stats = compute_pca_stats(bundle.splits["train"].take(PCA_IMAGES))
        augment = build_augment(
            cfg.data.augment, seed=cfg.run.seed, num_classes=bundle.num_classes, stats=stats
        )
    train = batch_dataset(
        bundle.splits["train"],
        cfg.training.batch_size,
        training=True,
        num_classes=bundle.num_classes,
        seed=cfg.run.seed,
        augment=augment,
        standardize=standardizer(cfg.data.mean, cfg.data.std),
        cache=bundle.cacheable("train", cfg.data.cache),
        shuffle_buffer=cfg.data.shuffle_buffer,
        epoch=epoch,
    )
    return {
        split: train
        if split == "train"
        else eval_dataset(cfg, bundle, split, cache=bundle.cacheable(split, cfg.data.cache))
        for split in bundle.splits
    }


def eval_dataset(
    cfg: RecipeConfig,
    bundle: DataBundle,
    split: str,
    batch_size: int | None = None,
    cache: bool = False,
) -> Any:
    """One split in order, standardized as training does, without augmentation:
    ``(x, one-hot y)`` batches of ``batch_size`` (default: the recipe's)."""
    return batch_dataset(
        bundle.splits[split],
        batch_size or cfg.training.batch_size,
        training=False,
        num_classes=bundle.num_classes,
        standardize=standardizer(cfg.data.mean, cfg.data.std),
        cache=cache,
    )
