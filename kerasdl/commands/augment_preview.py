"""``kerasdl augment-preview RECIPE --out grid.png [--set key=value ...] [--n 16]``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from kerasdl.commands._args import add_recipe_arguments, load_recipe_arguments
from kerasdl.errors import UserError
from kerasdl.io import save_figure
from kerasdl.plotting import check_output_image

COMMAND = "augment-preview"
HELP = "save a grid of a recipe's augmented training images"
DESCRIPTION = """Apply a recipe's data.augment list to its first training images and save a grid.

Each tile is titled with its (soft) label: mixup and cutmix show the classes mixed and their
weights. The same seed (run.seed) gives the same grid; change it to see other draws:
  kerasdl augment-preview configs/quickstart.yaml --out grid.png \\
      --set 'data.augment=[{name: rotation, degrees: 20}, {name: cutout, size: 0.4}]' \\
      --set run.seed=1"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="image file to write (.png, .jpg, .pdf, .svg)")
    add_recipe_arguments(parser, example="run.seed=1")
    parser.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    parser.add_argument(
        "--originals", action="store_true", help="show each original next to its augmentation"
    )


def _label_text(soft: Any, class_names: list[str]) -> str:
    order = soft.argsort()[::-1]
    parts = [f"{class_names[k]}:{soft[k]:.2f}" for k in order[:2] if soft[k] >= 0.005]
    return parts[0].split(":")[0] if len(parts) == 1 and soft[order[0]] > 0.995 else " ".join(parts)


def save_grid(
    images: Any,
    titles: list[str],
    out: Path,
    cols: int | None = None,
) -> None:
    """Save ``images`` (N, H, W, C) in [0, 1] as a titled grid, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(img.clip(0.0, 1.0), interpolation="nearest")
        ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)


def run(args: argparse.Namespace) -> int:
    out = check_output_image(args.out)
    if args.n < 1:
        raise UserError(f"--n: expected a positive number of images. Received: {args.n}")

    cfg = load_recipe_arguments(args)
    specs = cfg.data.augment
    if not specs:
        raise UserError(
            "the recipe has no data.augment list; add one, or try "
            "--set 'data.augment=[{name: rotation}, {name: cutout}]'"
        )

    import numpy as np
    import tensorflow as tf

    from kerasdl.data import load_data
    from kerasdl.data.augment import build_augment, compute_pca_stats, stats_required

    bundle = load_data(cfg.data, seed=cfg.run.seed)
    train = bundle.splits["train"]
    stats = compute_pca_stats(train) if stats_required(specs) else None
    fn = build_augment(specs, seed=cfg.run.seed, num_classes=bundle.num_classes, stats=stats)
    pairs = list(train.take(args.n).as_numpy_iterator())
    if not pairs:
        raise UserError("the recipe's training split is empty")
    images = np.stack([x for x, _ in pairs]).astype("float32")
    labels = np.eye(bundle.num_classes, dtype="float32")[[int(y) for _, y in pairs]]
    batch = tf.data.Dataset.from_tensor_slices((images, labels)).batch(len(pairs)).map(fn)
    aug, soft = next(iter(batch))
    aug, soft = aug.numpy(), soft.numpy()

    names = [str(c) for c in bundle.class_names]
    titles = [_label_text(s, names) for s in soft]
    if args.originals:
        tiles = np.stack([t for pair in zip(images, aug, strict=True) for t in pair])
        titles = [
            t
            for y, title in zip(labels, titles, strict=True)
            for t in (f"{names[int(np.argmax(y))]} (orig)", title)
        ]
        save_grid(tiles, titles, out, cols=2 * math.ceil(math.sqrt(len(pairs) / 2)))
    else:
        save_grid(aug, titles, out)
    ops = ", ".join(s["name"] for s in specs)
    print(f"Saved {len(pairs)} augmented training images ({ops}) to {out}")
    return 0
