"""SimCLR pretraining on the handwritten digits, then a linear probe, in a plain Keras script.

python apps/simclr_digits.py            # ~3 min on a 2-core CPU
python apps/simclr_digits.py --smoke    # a few steps, for the tests
"""

from __future__ import annotations

import argparse

from kerasdl.cli import quiet_tensorflow

quiet_tensorflow()  # TensorFlow's C++ start-up lines (CUDA probe, oneDNN notice) stay off stderr

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import kerasdl  # noqa: E402
from kerasdl.data import ssl  # noqa: E402
from kerasdl.methods import SimCLR  # noqa: E402
from kerasdl.methods.probes import run_probes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--smoke", action="store_true", help="3 steps on a tiny model")
    args = parser.parse_args()
    steps, batch = (3, 16) if args.smoke else (args.steps, args.batch_size)
    keras.utils.set_random_seed(0)

    digits = load_digits()
    x = tf.image.resize(digits.images[..., None] / 16.0, (16, 16)).numpy().clip(0, 1)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype("float32"), digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    # two random views per image: resized crop, brightness/contrast jitter (no flips for digits)
    views = ssl.contrastive_dataset(
        tf.data.Dataset.from_tensor_slices(x_train),
        batch,
        seed=0,
        crop_scale=(0.3, 1.0),
        flip=False,
        blur_prob=0.0,
    )
    filters = [8, 16] if args.smoke else [32, 64, 128]
    net = kerasdl.create_model(
        "simple_cnn", num_classes=0, input_shape=(16, 16, 1), filters=filters
    )
    model = SimCLR(net, projection_dim=64, temperature=0.5)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(views.repeat(), steps_per_epoch=steps, epochs=1, verbose=2, shuffle=False)

    scores = run_probes(net, (x_train, y_train), (x_test, y_test), labels_per_class=10)
    print(f"linear probe (10 labels per class): {scores['linear']:.4f}, k-NN: {scores['knn']:.4f}")


if __name__ == "__main__":
    main()
