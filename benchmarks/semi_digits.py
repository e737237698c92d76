"""Semi-supervised methods against supervised-only training on the digits data.

scikit-learn's 1,797 8x8 digits, resized to ``--image-size`` (16), 80/20 stratified train/test
split (seeded). 10 labels per class from the training split (100 labelled images, stratified and
seeded by ``kerasdl.data.ssl.split_labelled``), every training image unlabelled (as FixMatch).
Every method trains the same backbone with the same step budget, labelled batch and optimizer;
supervised-only trains on the 100 labelled images with the same weak augmentation (shift; no
flips for digits). Reported: the test accuracy of each method's evaluation model (the EMA weights
for FixMatch, the teacher for Mean Teacher, as the papers evaluate).

Backbone: ``simple_cnn`` (two stages of two 3x3 conv + BN + ReLU, then global pooling, dropout
0.2 and the linear head) with ``--filters`` per stage, 4/8 by default (1,230 parameters): small
enough that 100 labels are the bottleneck (supervised-only 81-91% depending on the seed, 97.8%
from 1,000 labels) as in the papers' settings. With wider networks supervised-only already
reaches 91-96% from 100 labels on these easy images and no method can add 5 points.

Settings (FixMatch's, Sohn et al. 2020, where they apply): SGD with Nesterov momentum 0.9,
learning rate 0.03, decoupled weight decay 5e-4, the cosine decay ``cos(7 pi k / 16 K)``, labelled
batch 16, 3,000 steps for every method; FixMatch tau 0.95, lambda_u 1, mu 7, EMA 0.999.
Pi-model and Mean Teacher: consistency weight 10 with the Gaussian ramp-up over the first 40% of
the budget (their papers' weight 100 is for 100k+ step runs); Pseudo-Label: alpha ramps from
step 300 to 1,200 (T1/T2 of Lee 2013 scaled to the budget).

Run:
    python benchmarks/semi_digits.py --seeds 0 1 2                 # 4/8 filters
    python benchmarks/semi_digits.py --seeds 0 1 2 --filters 8 16  # a wider CNN
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import kerasdl  # first: it asks for TensorFlow's oneDNN kernels (kerasdl.onednn)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from kerasdl.data import ssl
from kerasdl.methods import build_method, method_datasets
from kerasdl.methods.fixmatch import FixMatchCosine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ssl_digits import digits  # noqa: E402  (the same data and split as the SSL benchmark)

SEMI = ["pi_model", "mean_teacher", "pseudo_label", "fixmatch"]


def make_backbone(args) -> keras.Model:
    kw = {}
    if args.backbone == "mlp":
        kw = {"hidden_units": args.hidden, "activation": "relu", "dropout": args.dropout}
    elif args.backbone == "simple_cnn":
        kw = {"filters": args.filters, "dropout": args.dropout}
    return kerasdl.create_model(
        args.backbone, num_classes=10, input_shape=(args.image_size, args.image_size, 1), **kw
    )


def optimizer(args) -> keras.optimizers.Optimizer:
    """FixMatch's optimizer: SGD, Nesterov momentum 0.9, weight decay 5e-4, its cosine decay."""
    return keras.optimizers.SGD(
        FixMatchCosine(args.lr, args.steps), momentum=0.9, nesterov=True, weight_decay=5e-4
    )


def test_accuracy(model: keras.Model, test) -> float:
    model.compile(metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(True))
    return float(model.evaluate(*test, batch_size=256, verbose=0, return_dict=True)["accuracy"])


def method_params(name: str, args) -> dict:
    ramp = int(args.steps * args.rampup)
    common = {"labels_per_class": args.labels, "flip": False}
    extra = {
        "pi_model": {"rampup_steps": ramp, "consistency_weight": args.consistency},
        "mean_teacher": {"rampup_steps": ramp, "consistency_weight": args.consistency},
        "pseudo_label": {"rampup_start": args.steps // 10, "rampup_end": ramp},
        "fixmatch": {},
    }[name]
    return {**common, **extra}


def run_seed(args, seed: int) -> dict[str, float]:
    train, test = digits(args.image_size, seed)
    out: dict[str, float] = {}
    keras.utils.set_random_seed(seed)
    labelled, _ = ssl.split_labelled(train, args.labels, seed)
    weak = ssl.build_view("fixmatch_weak", seed, flip=False)
    sup = (
        labelled.shuffle(1000, seed=seed)
        .repeat()
        .map(lambda x, y: (weak(x), tf.one_hot(y, 10)))
        .batch(args.batch_size)
    )
    net = make_backbone(args)
    net.compile(optimizer(args), keras.losses.CategoricalCrossentropy(from_logits=True))
    t = time.time()
    net.fit(sup, steps_per_epoch=args.steps, epochs=1, verbose=0)
    out["supervised"] = test_accuracy(net, test)
    print(f"  supervised-only: {out['supervised']:.4f} ({time.time() - t:.0f} s)", flush=True)
    for name in args.methods:
        keras.utils.set_random_seed(seed)
        params = {**method_params(name, args), "seed": seed}
        splits = {"train": ssl.as_dataset(train)}
        ds, _ = method_datasets({"name": name, **params}, splits, args.batch_size, 10, seed=seed)
        method = build_method(name, make_backbone(args), 10, **params)
        method.compile(optimizer(args))
        t = time.time()
        method.fit(ds.repeat(), steps_per_epoch=args.steps, epochs=1, verbose=0)
        out[name] = test_accuracy(method.inference_model, test)
        print(f"  {name}: {out[name]:.4f} ({time.time() - t:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--backbone", default="simple_cnn", choices=["simple_cnn", "mlp"])
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--filters", type=int, nargs="+", default=[4, 8])
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--labels", type=int, default=10, help="labels per class")
    p.add_argument("--steps", type=int, default=3000, help="step budget of every method")
    p.add_argument("--batch-size", type=int, default=16, help="labelled batch (unlabelled x mu)")
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--rampup", type=float, default=0.4, help="ramp-up length / budget")
    p.add_argument("--consistency", type=float, default=10.0)
    p.add_argument("--methods", nargs="*", default=SEMI, choices=SEMI)
    args = p.parse_args(argv)
    start = time.time()
    results = {}
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        results[seed] = run_seed(args, seed)
    print(f"\nCommand: `python {' '.join(sys.argv)}` ({(time.time() - start) / 60:.1f} min)\n")
    print("| method | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---" * (len(args.seeds) + 2) + "|")
    for n in ["supervised", *args.methods]:
        accs = [results[s][n] for s in args.seeds]
        cells = " | ".join(f"{100 * a:.1f}" for a in accs)
        print(f"| {n} | {cells} | {100 * np.mean(accs):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
