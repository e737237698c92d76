"""The input pipeline alone: images/s of load + preprocess + augment + batch, as training runs it.

The datasets are built exactly as ``kerasdl train`` builds them (:func:`kerasdl.data.load_data`
and :func:`kerasdl.training.runner.make_datasets`: one-hot labels, cache, shuffle, batch,
augmentation, standardization, prefetch), from a recipe (``Case.recipe``, e.g. the quickstart's
digits) or from the synthetic source at the case's input size. When the recipe lists no
augmentation, the benchmark applies :data:`BENCH_AUGMENT`, the standard CIFAR/ImageNet training
augmentation (He et al. 2016: pad-4 random crop and horizontal flip), so that the augmentation cost
is part of the figure. Iteration starts after one full epoch (the cache is filled then, as in
every epoch after the first of a real run).
"""

from __future__ import annotations

import math
import time
from typing import Any

from kerasdl.bench.case import Case, configure_threads, throughput

BENCH_AUGMENT: list[dict[str, Any]] = [{"name": "random_crop", "padding": 4}, {"name": "flip"}]


def pipeline_datasets(case: Case) -> tuple[Any, Case]:
    """The training dataset of ``case`` (full batches only) and the case with the data's shape.

    Returns:
        ``(dataset of (images, one-hot labels), case updated with input size, channels and
        classes of the data)``.
    """
    import dataclasses

    import tensorflow as tf

    from kerasdl.config import DataConfig, RecipeConfig, SyntheticConfig, load_recipe
    from kerasdl.data import load_data
    from kerasdl.training.runner import make_datasets

    if case.recipe:
        cfg = load_recipe(case.recipe, [f"training.batch_size={case.batch_size}"])
        if not cfg.data.augment:
            cfg.data.augment = BENCH_AUGMENT
    else:
        data = DataConfig(
            source="synthetic",
            image_size=case.input_size,
            channels=case.channels,
            val_split=0.0,
            test_split=0.0,
            synthetic=SyntheticConfig(
                num_examples=max(4 * case.batch_size, case.num_classes, 64),
                num_classes=case.num_classes,
            ),
            augment=BENCH_AUGMENT,
        )
        cfg = RecipeConfig.model_validate(
            {"data": data.model_dump(), "training": {"batch_size": case.batch_size}}
        )
    bundle = load_data(cfg.data, seed=0)
    train = make_datasets(cfg, bundle)["train"]
    b = case.batch_size
    train = train.filter(lambda x, y: tf.shape(x)[0] == b)
    if case.private_threadpool:
        options = tf.data.Options()
        options.threading.private_threadpool_size = case.private_threadpool
        train = train.with_options(options)
    h, w, c = bundle.spec.input_shape
    updated = dataclasses.replace(
        case, input_size=int(h), channels=int(c), num_classes=bundle.num_classes
    )
    if case.recipe:  # the recipe's model, as ``kerasdl train`` builds it
        kwargs = {
            k: v for k, v in cfg.model.kwargs().items() if k not in ("num_classes", "input_shape")
        }
        updated = dataclasses.replace(updated, model=cfg.model.name, model_kwargs=kwargs)
    updated.train_size = bundle.sizes.get("train", 0)  # type: ignore[attr-defined]
    return train, updated


def run_pipeline_case(case: Case) -> dict[str, Any]:
    """Images/s of iterating the training pipeline (median over repetitions)."""
    configure_threads(case)
    ds, case = pipeline_datasets(case)
    per_epoch = max(getattr(case, "train_size", 0) // case.batch_size, 1)
    it = iter(ds.repeat())
    for _ in range(max(per_epoch, case.warmup)):
        next(it)

    def run() -> None:
        for _ in range(case.steps):
            next(it)

    times = []
    for _ in range(case.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {
        "pipeline": throughput(times, case.steps * case.batch_size),
        "input_shape": [case.input_size, case.input_size, case.channels],
        "batches_per_epoch": per_epoch,
        "epochs_per_repeat": math.ceil(case.steps / per_epoch),
    }
