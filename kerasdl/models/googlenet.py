"""GoogLeNet (Inception v1) with torchvision's layer structure and optional auxiliary classifiers.

Stem: 7x7/2 conv, 3x3/2 max-pool (ceil mode), 1x1 conv, 3x3 conv, 3x3/2 max-pool; inception
3a-3b, max-pool, 4a-4e, 2x2 max-pool, 5a-5b; global average pooling, dropout 0.2 and a linear
head. Every convolution is followed by batch norm (epsilon 1e-3) and ReLU, as in torchvision
(the 2014 paper predates batch norm). torchvision's "5x5" branches use 3x3 kernels:
``branch3_kernel=3`` keeps that (and its 6,624,904 parameters); 5 gives the paper's kernel.

With ``aux_logits=True`` two auxiliary classifiers read the outputs of inception 4a and 4d. In
training the model returns ``(main, aux1, aux2)`` and its loss is ``main + 0.3 * (aux1 + aux2)``
(each term the compiled loss), so ``compile(loss=...)`` + ``fit`` train all three heads; in
inference (``predict``, ``evaluate``, export) it returns the main logits only.

References:
    Szegedy et al., "Going Deeper with Convolutions", CVPR 2015. torchvision
    ``models/googlenet.py``.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.layers.inception import ConvNormAct, InceptionAux, InceptionModule
from kerasdl.layers.torch_compat import PaddedMaxPooling2D
from kerasdl.models.base import Classifier, check_num_classes, classifier_head
from kerasdl.registry import register_variants

AUX_WEIGHT = 0.3
# (name, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj): the paper's table 1.
INCEPTIONS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

# The last layer at each resolution, with its stride: the stage outputs of ``features_only``.
FEATURE_STAGES = (
    ("conv1", 2),
    ("conv3", 4),
    ("inception3b", 8),
    ("inception4e", 16),
    ("inception5b", 32),
)


@keras.saving.register_keras_serializable(package="kerasdl")
class GoogLeNet(Classifier):
    """GoogLeNet / Inception v1.

    Args:
        num_classes: number of output classes (logits); 0 for pooled features only (then no
            auxiliary classifiers either).
        input_shape: ``(H, W, C)``, at least 32x32.
        aux_logits: add the two auxiliary classifiers (used in training only).
        dropout: dropout before the head (torchvision 0.2; the paper 0.4).
        aux_dropout: dropout inside the auxiliary classifiers (0.7).
        branch3_kernel: kernel of the "5x5" branches (3 as torchvision, 5 as the paper).
        norm: normalization choice.
        activation: activation choice.

    Example:
        >>> model = GoogLeNet(num_classes=10, input_shape=(64, 64, 3), aux_logits=True)
        >>> model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True))
        >>> # fit trains main + 0.3 (aux1 + aux2); predict returns the main logits

    Reference:
        Szegedy et al., "Going Deeper with Convolutions", CVPR 2015.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
        aux_logits: bool = False,
        dropout: float = 0.2,
        aux_dropout: float = 0.7,
        branch3_kernel: int = 3,
        norm: str = "batch",
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        use_aux = bool(aux_logits) and num_classes > 0
        unit = dict(norm=norm, activation=activation)
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = ConvNormAct(64, 7, strides=2, name="conv1", **unit)(inputs)
        x = PaddedMaxPooling2D(3, strides=2, ceil_mode=True, name="maxpool1")(x)
        x = ConvNormAct(64, 1, name="conv2", **unit)(x)
        x = ConvNormAct(192, 3, name="conv3", **unit)(x)
        x = PaddedMaxPooling2D(3, strides=2, ceil_mode=True, name="maxpool2")(x)
        aux_outputs = []
        for key, channels in INCEPTIONS.items():
            if key == "4a":
                x = PaddedMaxPooling2D(3, strides=2, ceil_mode=True, name="maxpool3")(x)
            elif key == "5a":
                x = PaddedMaxPooling2D(2, strides=2, ceil_mode=True, name="maxpool4")(x)
            x = InceptionModule(
                *channels, branch3_kernel=branch3_kernel, name=f"inception{key}", **unit
            )(x)
            if use_aux and key in ("4a", "4d"):
                aux_name = "aux1" if key == "4a" else "aux2"
                aux_outputs.append(InceptionAux(num_classes, aux_dropout, name=aux_name, **unit)(x))
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        main = classifier_head(x, num_classes, dropout)
        outputs = [main, *aux_outputs] if use_aux else main
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.use_aux = use_aux
        if use_aux:
            # Loss and metrics are compiled against the main output only; compute_loss adds the
            # auxiliary terms.
            self.output_names = self.output_names[:1]
        self.aux_logits = bool(aux_logits)

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` for ``features_only`` (timm has no GoogLeNet; the rule of its
        Inception v3: the last layer at each resolution)."""
        return list(FEATURE_STAGES)

    def call(self, inputs, training=None, mask=None, **kwargs):
        outputs = super().call(inputs, training=training, mask=mask, **kwargs)
        if self.use_aux and not training:
            return outputs[0]
        return tuple(outputs) if self.use_aux else outputs

    def compute_output_spec(self, inputs, training=None, mask=None):
        spec = super().compute_output_spec(inputs, training=training, mask=mask)
        if self.use_aux and not training:
            return spec[0]
        return spec

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss of the main output plus 0.3 times that of each auxiliary output."""
        if not isinstance(y_pred, tuple | list):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        main, *aux = y_pred
        total = super().compute_loss(x, y, main, sample_weight, training=training)
        for a in aux:
            total = total + AUX_WEIGHT * self._compile_loss(y, a, sample_weight)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, tuple | list):
            y_pred = y_pred[0]
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)


VARIANTS = {"googlenet": dict(aux_logits=False)}

register_variants(
    GoogLeNet, VARIANTS, family="googlenet", paper="Szegedy et al. 2015", year=2015, min_input=32
)
