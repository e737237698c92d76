"""Architecture claims: residual connections against degradation, small filters, 1x1 reductions.

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, sec. 4.2.
    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015, sec. 2.3. Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, sec. 5 and
    table 1; Lin, Chen & Yan, "Network in Network", ICLR 2014.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from kerasdl.experiments.base import (
    Arm,
    ArmRun,
    Context,
    Experiment,
    Results,
    digits_recipe,
    final,
    probed,
    test_metric,
)
from kerasdl.experiments.probes import plot_bars


def _resnet(depth: int, residual: bool) -> dict[str, Any]:
    return {"model": {"name": f"resnet{depth}", "residual": residual}}


DEGRADATION = Experiment(
    name="degradation",
    claim="A deeper plain network trains to a higher training loss than a shallower one; with "
    "residual connections the deeper network trains as well or better.",
    reference="He et al. 2016, sec. 4.2, fig. 6",
    base=digits_recipe(
        epochs=8, optimizer={"name": "momentum", "learning_rate": 0.05}, monitor="loss"
    ),
    arms=(
        Arm("plain_20", _resnet(20, False), "CIFAR ResNet-20 without shortcuts"),
        Arm("plain_56", _resnet(56, False), "CIFAR ResNet-56 without shortcuts"),
        Arm("resnet_20", _resnet(20, True), "ResNet-20 (option A shortcuts)"),
        Arm("resnet_56", _resnet(56, True), "ResNet-56 (option A shortcuts)"),
    ),
    measures=(final(), final("accuracy", "final training accuracy"), test_metric()),
    quick={"training": {"epochs": 2}},
    quick_arms=("plain_56", "resnet_56"),
    expect=(("resnet_56", "plain_56"), ("plain_20", "plain_56")),
    seeds=3,
    curves=("loss", "accuracy"),
)


def _conv_stack(channels: int, kernels: tuple[int, ...], size: int = 16) -> Any:
    """``len(kernels)`` bias-free ``channels -> channels`` convolutions, ReLU between them."""
    import keras

    inputs = keras.Input((size, size, channels))
    x = inputs
    for i, k in enumerate(kernels):
        if i:
            x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(channels, k, padding="same", use_bias=False)(x)
    return keras.Model(inputs, x)


def receptive_field(model: Any) -> int:
    """The side of the input window one output position depends on (from the gradient)."""
    import tensorflow as tf

    size = model.inputs[0].shape[1]
    x = tf.random.normal((1, size, size, model.inputs[0].shape[-1]), seed=0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = model(x)[0, size // 2, size // 2, 0]
    rows = np.nonzero(np.abs(np.asarray(tape.gradient(y, x))[0]).sum(axis=(1, 2)))[0]
    return int(rows.max() - rows.min() + 1)


def small_filter_checks(c: int = 64, size: int = 16) -> list[dict[str, Any]]:
    """Weights, MACs per output position and receptive field of two 3x3 convolutions against one
    5x5 (``c -> c`` channels), from Keras layers and the project's MAC counter."""
    from kerasdl.models.macs import count_macs

    checks = []
    for label, kernels, factor in (("two 3x3", (3, 3), 18), ("one 5x5", (5,), 25)):
        model = _conv_stack(c, kernels, size)
        checks.append(
            {
                "name": f"{label} weights, C={c} (= {factor}C^2)",
                "computed": int(model.count_params()),
                "expected": factor * c * c,
            }
        )
        checks.append(
            {
                "name": f"{label} MACs per output position, C={c}",
                "computed": count_macs(model) // (size * size),
                "expected": factor * c * c,
            }
        )
        checks.append(
            {
                "name": f"{label} receptive field (side, from the gradient)",
                "computed": receptive_field(model),
                "expected": 5,
            }
        )
    for check in checks:
        check["ok"] = check["computed"] == check["expected"]
    return checks


def _small_filters_checks(ctx: Context, results: Results) -> dict[str, Any]:
    checks, notes = small_filter_checks(), []
    plot_bars(results, ctx.out / "accuracy.png", "small_filters: test accuracy on digits")
    p3, p5 = (results.summary(a, results.experiment.measures[1])["mean"] for a in _SF_ARMS)
    notes.append(f"Whole networks: {p3:,.0f} vs {p5:,.0f} parameters ({p3 / p5:.2f}x).")
    return {"checks": checks, "plots": ["accuracy.png"], "notes": notes}


def _param_probe(cfg: Any, run: ArmRun) -> dict[str, Any]:
    import keras

    from kerasdl.methods import METHODS  # noqa: F401  (registers what a .keras file names)

    model = keras.models.load_model(f"{run.run_dir}/best.keras", compile=False)
    return {"params": int(model.count_params())}


_SF_ARMS = ("two_3x3", "one_5x5")
SMALL_FILTERS = Experiment(
    name="small_filters",
    claim="Two stacked 3x3 convolutions see the 5x5 window of one 5x5 convolution with 18C^2 "
    "instead of 25C^2 weights, and train at least as well.",
    reference="Simonyan & Zisserman 2015, sec. 2.3",
    base=digits_recipe(
        {"name": "simple_cnn", "filters": [32, 64], "dropout": 0.2},
        epochs=12,
        optimizer={"name": "adam", "learning_rate": 0.003},
        data={"image_size": 16},
        schedule={"name": "cosine"},
    ),
    arms=(
        Arm(
            "two_3x3", {"model": {"kernel_size": 3, "convs_per_stage": 2}}, "2 x conv3x3 per stage"
        ),
        Arm(
            "one_5x5", {"model": {"kernel_size": 5, "convs_per_stage": 1}}, "1 x conv5x5 per stage"
        ),
    ),
    measures=(test_metric(), probed("params", "parameters", False, ",.0f")),
    quick={"training": {"epochs": 2}},
    expect=(("two_3x3", "one_5x5"),),
    curves=("loss", "val_accuracy"),
    probe=_param_probe,
    analyse=_small_filters_checks,
)

# GoogLeNet's inception (3a) 5x5 branch: 192 input channels at 28x28, 16 reduce, 32 out.
_IN, _RED, _OUT, _SIDE = 192, 16, 32, 28


def _branch(reduce: bool) -> Any:
    """The 5x5 branch of inception (3a) with or without its 1x1 reduction (the model's own
    conv-norm-act unit)."""
    import keras

    from kerasdl.layers.inception import ConvNormAct

    inputs = keras.Input((_SIDE, _SIDE, _IN))
    x = ConvNormAct(_RED, 1, name="reduce")(inputs) if reduce else inputs
    return keras.Model(inputs, ConvNormAct(_OUT, 5, name="conv5x5")(x))


def _time_branch(arm: Arm, seed: int, ctx: Context) -> ArmRun:
    """Milliseconds of one training step (forward and backward) of the branch on a batch."""
    import keras
    import tensorflow as tf

    from kerasdl.models.macs import count_macs

    keras.utils.set_random_seed(seed)
    model = _branch(arm.name == "reduce_1x1")
    batch, reps = (8, 3) if ctx.quick else (32, 10)
    x = tf.random.normal((batch, _SIDE, _SIDE, _IN), seed=seed)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
        return tape.gradient(loss, model.trainable_weights)

    step(x)  # trace and warm up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        [g.numpy() for g in step(x)]
        times.append(time.perf_counter() - start)
    extra = {
        "ms_per_step": 1000 * float(np.median(times)),
        "macs_per_position": count_macs(model) // (_SIDE * _SIDE),
        "params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "batch": batch,
    }
    keras.backend.clear_session()
    return ArmRun(arm.name, seed, {}, {}, seconds=float(sum(times)), extra=extra)


def bottleneck_checks() -> list[dict[str, Any]]:
    """MACs per output position of the direct 5x5 and of GoogLeNet's own inception (3a) 5x5
    branch (1x1 reduction, then 5x5), from the project's MAC counter."""
    import keras

    from kerasdl.layers.inception import InceptionModule
    from kerasdl.models.googlenet import INCEPTIONS
    from kerasdl.models.macs import count_macs, macs_by_layer

    inputs = keras.Input((_SIDE, _SIDE, _IN))
    module = keras.Model(inputs, InceptionModule(*INCEPTIONS["3a"], branch3_kernel=5)(inputs))
    branch3 = sum(m for path, _, m in macs_by_layer(module) if "branch3" in path)
    direct = count_macs(_branch(False)) // (_SIDE * _SIDE)
    checks = [
        {"name": "5x5x192x32 direct, per position", "computed": direct, "expected": 153_600},
        {
            "name": "1x1x192x16 + 5x5x16x32 in GoogLeNet's inception (3a), per position",
            "computed": branch3 // (_SIDE * _SIDE),
            "expected": 15_872,
        },
    ]
    for check in checks:
        check["ok"] = check["computed"] == check["expected"]
    return checks


def _bottleneck_checks(ctx: Context, results: Results) -> dict[str, Any]:
    checks = bottleneck_checks()
    plot_bars(results, ctx.out / "step_time.png", "inception (3a) 5x5 branch: ms per step")
    t = {a: results.summary(a)["mean"] for a in ("direct_5x5", "reduce_1x1")}
    notes = [
        f"Measured speed-up of a training step: {t['direct_5x5'] / t['reduce_1x1']:.1f}x "
        f"(the MAC ratio is {153_600 / 15_872:.1f}x)."
    ]
    return {"checks": checks, "plots": ["step_time.png"], "notes": notes}


BOTTLENECK_1X1 = Experiment(
    name="bottleneck_1x1",
    claim="A 1x1 reduction to 16 channels cuts the cost of GoogLeNet's 5x5 branch from "
    "5x5x192x32 = 153,600 to 1x1x192x16 + 5x5x16x32 = 15,872 MACs per output position.",
    reference="Szegedy et al. 2015, sec. 5, table 1; Lin et al. 2014",
    arms=(
        Arm("direct_5x5", {}, "conv5x5 192 -> 32"),
        Arm("reduce_1x1", {}, "conv1x1 192 -> 16, conv5x5 16 -> 32"),
    ),
    measures=(
        probed("ms_per_step", "ms per training step (28x28x192 input)", False, ".1f"),
        probed("macs_per_position", "MACs per output position", False, ",.0f"),
        probed("params", "weights", False, ",.0f"),
    ),
    expect=(("reduce_1x1", "direct_5x5"),),
    seeds=3,
    curves=(),
    run_arm=_time_branch,
    analyse=_bottleneck_checks,
)

EXPERIMENTS = (DEGRADATION, SMALL_FILTERS, BOTTLENECK_1X1)
