"""FixMatch on the handwritten digits with 10 labels per class, in a plain Keras script.

The method is a ``keras.Model``: build it around any kerasdl classifier, ``compile`` it with an
optimizer and call ``fit`` on the semi-supervised dataset; ``evaluate`` and ``predict`` use the
EMA weights, as in the paper.

    python apps/fixmatch_digits.py            # ~3 min on a 2-core CPU, about 97% test accuracy
    python apps/fixmatch_digits.py --smoke    # a few steps, for the tests
"""

from __future__ import annotations

import argparse

from kerasdl.cli import quiet_tensorflow

quiet_tensorflow()  # TensorFlow's C++ start-up lines (CUDA probe, oneDNN notice) stay off stderr

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import kerasdl  # noqa: E402
from kerasdl.data import ssl  # noqa: E402
from kerasdl.methods import FixMatch  # noqa: E402
from kerasdl.methods.fixmatch import FixMatchCosine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="3 steps on a tiny model")
    args = parser.parse_args()
    steps = 3 if args.smoke else args.steps
    keras.utils.set_random_seed(0)

    digits = load_digits()
    x = tf.image.resize(digits.images[..., None] / 16.0, (16, 16)).numpy().clip(0, 1)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype("float32"), digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    labelled, unlabelled = ssl.split_labelled((x_train, y_train), args.labels_per_class, seed=0)
    batch, mu = (8, 2) if args.smoke else (32, 7)
    train = ssl.semi_supervised_dataset(
        labelled, unlabelled, batch, num_classes=10, mu=mu, views="weak_strong", flip=False
    )
    test = (x_test, keras.utils.to_categorical(y_test, 10))

    filters = [8, 16] if args.smoke else [32, 64, 128]
    net = kerasdl.create_model(
        "simple_cnn", num_classes=10, input_shape=(16, 16, 1), filters=filters
    )
    model = FixMatch(net, num_classes=10, mu=mu)  # tau 0.95, lambda_u 1, EMA 0.999
    model.compile(
        keras.optimizers.SGD(
            FixMatchCosine(0.03, steps), momentum=0.9, nesterov=True, weight_decay=5e-4
        )
    )
    model.fit(train.repeat(), steps_per_epoch=steps, epochs=1, verbose=2, shuffle=False)
    result = model.evaluate(*test, batch_size=256, return_dict=True, verbose=0)
    print(
        f"FixMatch test accuracy: {result['accuracy']:.4f} "
        f"({args.labels_per_class} labels per class, {steps} steps)"
    )
    predictions = np.argmax(model.predict(x_test[:5], verbose=0), axis=-1)
    print("first predictions:", predictions.tolist(), "true:", y_test[:5].tolist())


if __name__ == "__main__":
    main()
