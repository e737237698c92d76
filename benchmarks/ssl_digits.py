"""Self-supervised pretraining on the digits data: SimCLR, MoCo v2 and MAE against random init.

scikit-learn's 1,797 8x8 digits, resized to ``--image-size`` (16), 80/20 stratified train/test
split (seeded). Every method pretrains the same encoder, the registry ViT ``vit_ti_16`` resized as
the SSL recipes resize it (4x4 patches, width 64, 4 blocks of 4 heads, MLP 256, class token, mean
pooling) with MAE's fixed sine-cosine positions and reference initialisation
(``position_embedding="sincos", weight_init="mae"``; 0.20M parameters), from the same seeded
initialization, on all 1,437 training images without labels (batch 128). The numbers in
docs/ssl.md were measured with the ViT MAE used to build for itself (``MAEEncoder``, removed:
the same architecture, sine-cosine positions, Keras's default initialisation). Then a linear probe
(logistic regression on frozen, standardized features) and a weighted k-NN use 10 labels per
class (the same 100 images for every row of a seed) and are scored on the test split; the
"random init" row is the same probes on the same encoder before pretraining.

* SimCLR (``--steps``, 600): NT-Xent, temperature 0.5, two-layer projection head; Adam 1e-3.
* MoCo v2 (``--steps``, 600): queue 1024 and key momentum 0.99 (the paper's 65,536 and 0.999 are
  for 1.28M images; 1,024 keys are 8 batches here), temperature 0.2, Adam 1e-3. On the ViT its
  projection head has batch normalization (MoCo v3's head, Chen, Xie & He 2021, section 4): a
  random ViT maps all digits to nearly one feature vector (mean cosine 0.9998), so without it
  every key in the queue is alike and InfoNCE stays at ``log(K + 1)``.
* MAE (``--mae-steps``, 2000 = 178 epochs; SimCLR and MoCo get 53; the MAE paper pretrains for
  800-1600 epochs, MoCo v2 for 200-800): mask ratio 0.75, the encoder on the 4 visible patches
  of 16, a decoder of 4 blocks of width 64 (the paper's Table 1a: a deeper decoder gives a
  better linear probe), loss on the normalized pixels of the masked patches (``norm_pix_loss``,
  Table 1c); AdamW (betas 0.9, 0.95, decay 0.05), 10% linear warm-up to 1e-3, then cosine.
  Writes a PNG of original / masked / reconstructed test images (``--mae-png``).

Views: random resized crop (scale 0.3-1 for the contrastive methods, 0.2-1 for MAE), no flips
(digits are not mirror-symmetric), brightness/contrast jitter for the contrastive methods, no blur
at 16x16. ``--encoder simple_cnn`` runs SimCLR and MoCo on the small CNN instead (MAE needs a ViT).

Run:
    python benchmarks/ssl_digits.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import time

import kerasdl  # first: it asks for TensorFlow's oneDNN kernels (kerasdl.onednn)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from kerasdl.data import ssl
from kerasdl.methods import MAE, MoCo, SimCLR, method_datasets
from kerasdl.methods.probes import run_probes
from kerasdl.models.vit import VisionTransformer

SELF = ["simclr", "moco", "mae"]


def digits(image_size: int = 16, seed: int = 0):
    """``(x_train, y_train), (x_test, y_test)``: digits in [0, 1] at ``image_size``, 80/20."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images[..., None].astype(np.float32) / 16.0
    x = tf.image.resize(x, (image_size, image_size), antialias=True).numpy().clip(0, 1)
    xtr, xte, ytr, yte = train_test_split(
        x, d.target, test_size=0.2, stratify=d.target, random_state=seed
    )
    return (xtr, ytr.astype(np.int64)), (xte, yte.astype(np.int64))


def vit(size: int, name: str = "vit") -> VisionTransformer:
    """``vit_ti_16`` resized: 4x4 patches, width 64, 4 blocks of 4 heads, MLP 256, mean pooling,
    MAE's sine-cosine positions and initialisation (0.20M parameters)."""
    return kerasdl.create_model(
        "vit_ti_16",
        num_classes=0,
        input_shape=(size, size, 1),
        patch_size=4,
        hidden_dim=64,
        num_layers=4,
        num_heads=4,
        mlp_dim=256,
        pool="avg",
        position_embedding="sincos",
        weight_init="mae",
        name=name,
    )


def encoder(arch: str, size: int) -> keras.Model:
    if arch == "vit":
        return vit(size)
    return kerasdl.create_model("simple_cnn", num_classes=0, input_shape=(size, size, 1))


def setup(name: str, net: keras.Model, args, seed: int):
    """``(data_params, method, optimizer, steps)`` of one method around ``net``."""
    if name == "mae":
        data = dict(crop_scale=(0.2, 1.0), flip=False, seed=seed)
        method = MAE(
            net, 10, decoder_dim=64, decoder_depth=4, decoder_heads=4, norm_pix_loss=True, seed=seed
        )
        steps, warm = args.mae_steps, args.mae_steps // 10
        lr = keras.optimizers.schedules.CosineDecay(
            0.0, steps - warm, warmup_target=1e-3, warmup_steps=warm
        )
        return data, method, keras.optimizers.AdamW(lr, weight_decay=0.05, beta_2=0.95), steps
    data = dict(flip=False, crop_scale=(0.3, 1.0), blur_prob=0.0, seed=seed)
    if name == "simclr":
        method = SimCLR(net, seed=seed)
    else:
        method = MoCo(
            net,
            queue_size=1024,
            momentum=0.99,
            head_batch_norm=isinstance(net, VisionTransformer),
            seed=seed,
        )
    return data, method, keras.optimizers.Adam(1e-3), args.steps


def run(args, seed: int, train, test) -> dict[str, tuple]:
    """``{row: (linear, knn, steps, seconds)}`` for the random init and each method."""
    splits = {"train": ssl.as_dataset(train)}
    probe = dict(labels_per_class=10, seed=seed)
    keras.utils.set_random_seed(seed)
    rnd = run_probes(encoder(args.encoder, args.image_size), train, test, **probe)
    out = {"random init": (rnd["linear"], rnd["knn"], 0, 0.0)}
    print(f"  random init: linear {rnd['linear']:.4f}, kNN {rnd['knn']:.4f}", flush=True)
    for name in args.methods:
        keras.utils.set_random_seed(seed)  # the same initial weights as the random-init row
        net = vit(args.image_size) if name == "mae" else encoder(args.encoder, args.image_size)
        data, method, opt, steps = setup(name, net, args, seed)
        ds, _ = method_datasets({"name": name, **data}, splits, args.batch_size, 10, seed)
        method.compile(opt)
        t = time.time()
        method.fit(ds.repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
        sec = time.time() - t
        if name == "mae" and args.mae_png:
            method.save_reconstructions(test[0][:8], args.mae_png)
        got = run_probes(method.inference_model, train, test, **probe)
        out[name] = (got["linear"], got["knn"], steps, sec)
        print(
            f"  {name}: linear {got['linear']:.4f}, kNN {got['knn']:.4f} "
            f"({steps} steps, {sec:.0f} s)",
            flush=True,
        )
    return out


def table(results: dict[int, dict[str, tuple]], rows: list[str]) -> str:
    """Markdown: per-seed and mean accuracies, the mean's gain over the random-init row."""
    seeds = sorted(results)
    per_seed = " / ".join(f"seed {s}" for s in seeds)
    lines = [
        f"| encoder weights | steps | pretraining s | linear % ({per_seed}) | linear % mean "
        f"| k-NN % ({per_seed}) | k-NN % mean |",
        "|---" * 7 + "|",
    ]
    base = [np.mean([100 * results[s]["random init"][i] for s in seeds]) for i in (0, 1)]
    for r in rows:
        cells = []
        for i in (0, 1):
            accs = [100 * results[s][r][i] for s in seeds]
            gain = f" ({np.mean(accs) - base[i]:+.1f})" if r != "random init" else ""
            cells += [" / ".join(f"{a:.1f}" for a in accs), f"{np.mean(accs):.1f}{gain}"]
        steps = results[seeds[0]][r][2]
        sec = f"{np.mean([results[s][r][3] for s in seeds]):.0f}" if steps else "-"
        lines.append(f"| {r} | {steps or '-'} | {sec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--methods", nargs="+", default=SELF, choices=SELF)
    p.add_argument(
        "--encoder",
        default="vit",
        choices=["vit", "simple_cnn"],
        help="encoder of SimCLR and MoCo (MAE always pretrains the ViT)",
    )
    p.add_argument("--steps", type=int, default=600, help="SimCLR and MoCo steps")
    p.add_argument("--mae-steps", type=int, default=2000, help="MAE steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--mae-png", default="docs/mae_digits.png", help="'' to skip the PNG")
    args = p.parse_args(argv)
    if args.encoder != "vit" and "mae" in args.methods:
        p.error("MAE pretrains a ViT: with --encoder simple_cnn pass --methods simclr moco")
    start = time.time()
    results = {}
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        results[seed] = run(args, seed, *digits(args.image_size, seed))
    print(f"\nCommand: `python {' '.join(sys.argv)}` ({(time.time() - start) / 60:.1f} min)\n")
    print(table(results, ["random init", *args.methods]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
