"""DARTS evaluation network (``darts_net``): a stack of cells built from a genotype.

The network of the reference ``NetworkCIFAR`` (quark0/darts ``cnn/model.py``): a 3x3 stem
convolution with ``3 * init_channels`` filters and BN, then ``layers`` cells, reduction cells
(stride 2, channels doubled) at 1/3 and 2/3 of the depth, global average pooling and a
linear classifier.
Each cell preprocesses its two inputs (the outputs of the previous two cells) to ``C`` channels
(ReLU-1x1 conv-BN, or :class:`FactorizedReduce` after a reduction cell), applies the genotype's two
operations per node, sums them, and concatenates the nodes in ``*_concat``. Non-identity operations
go through drop-path in training. An optional auxiliary tower (after the cell at 2/3 depth; weight
0.4 in the paper) adds a second classifier loss during training.

With ``genotype="DARTS_V2"``, ``layers=20``, ``init_channels=36`` and 10 classes this is the paper's
CIFAR-10 network: 3,349,342 parameters without the auxiliary tower (the count the reference prints,
which excludes ``auxiliary`` parameters), 3,825,768 with it.

Reference:
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019;
    https://github.com/quark0/darts (``cnn/model.py``).
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.errors import UserError
from kerasdl.layers.darts_ops import FactorizedReduce, ReLUConvBN, make_op
from kerasdl.layers.dropconnect import DropPath
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.models.base import Classifier, check_num_classes, classifier_head
from kerasdl.models.genotype import PRESETS, Genotype, load_genotype
from kerasdl.registry import register_variants


def reduction_indices(layers: int) -> tuple[int, int]:
    """Cells that reduce: at 1/3 and 2/3 of the depth (``layers // 3``, ``2 * layers // 3``)."""
    return layers // 3, 2 * layers // 3


def _cell(
    s0: Any,
    s1: Any,
    genotype: Genotype,
    channels: int,
    reduction: bool,
    reduction_prev: bool,
    drop_path_rate: float,
    name: str,
) -> Any:
    """One discrete cell as functional-graph operations; returns its output tensor."""
    if reduction_prev:
        s0 = FactorizedReduce(channels, name=f"{name}_pre0")(s0)
    else:
        s0 = ReLUConvBN(channels, name=f"{name}_pre0")(s0)
    s1 = ReLUConvBN(channels, name=f"{name}_pre1")(s1)
    gene, concat = (
        (genotype.reduce, genotype.reduce_concat)
        if reduction
        else (genotype.normal, genotype.normal_concat)
    )
    states = [s0, s1]
    for node in range(len(gene) // 2):
        branches = []
        for k in (0, 1):
            op_name, index = gene[2 * node + k]
            stride = 2 if reduction and index < 2 else 1
            op = make_op(op_name, channels, stride, True, name=f"{name}_n{node + 2}_{k}_{op_name}")
            h = op(states[index])
            if drop_path_rate > 0 and not isinstance(op, keras.layers.Identity):
                h = DropPath(drop_path_rate, name=f"{name}_n{node + 2}_{k}_droppath")(h)
            branches.append(h)
        states.append(keras.layers.Add(name=f"{name}_n{node + 2}")(branches))
    return keras.layers.Concatenate(name=f"{name}_out")([states[i] for i in concat])


def _auxiliary_head(x: Any, num_classes: int) -> Any:
    """The reference ``AuxiliaryHeadCIFAR`` (expects an 8x8 map: 5x5/3 avg pool -> 2x2 -> 1x1)."""
    size = min(x.shape[1], x.shape[2])
    if size < 8:
        raise UserError(
            f"darts_net: the auxiliary tower needs a feature map of at least 8x8 at 2/3 depth "
            f"(input at least 32x32). Received {x.shape[1]}x{x.shape[2]}; set auxiliary: false."
        )
    x = keras.layers.ReLU(name="aux_relu0")(x)
    x = keras.layers.AveragePooling2D(5, strides=3, padding="valid", name="aux_pool")(x)
    x = keras.layers.Conv2D(128, 1, use_bias=False, name="aux_conv1")(x)
    x = get_norm_layer("batch", name="aux_bn1")(x)
    x = keras.layers.ReLU(name="aux_relu1")(x)
    x = keras.layers.Conv2D(768, 2, use_bias=False, name="aux_conv2")(x)
    x = get_norm_layer("batch", name="aux_bn2")(x)
    x = keras.layers.ReLU(name="aux_relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="aux_gap")(x)  # 1x1 for the reference 8x8 input
    return keras.layers.Dense(num_classes, dtype="float32", name="aux_head")(x)


class _Hidden:
    """Holds an object out of Keras's attribute tracking (the auxiliary graph shares layers)."""

    def __init__(self, value: Any) -> None:
        self.value = value


@keras.saving.register_keras_serializable(package="kerasdl")
class DartsNet(Classifier):
    """The DARTS evaluation network for a genotype (``NetworkCIFAR`` of the reference).

    Args:
        num_classes: output classes (logits); 0 for pooled features only.
        input_shape: ``(H, W, C)``.
        genotype: a preset name (``"DARTS_V2"``, ``"DARTS_V1"``), a path to a genotype JSON
            file (as written by ``kerasdl search``), or the genotype as a dict.
        init_channels: ``C`` of the first cells (the stem has ``3 * C``); 36 in the paper.
        layers: number of cells; 20 in the paper.
        auxiliary: add the auxiliary tower; training then returns ``(logits, aux_logits)`` and the
            compiled loss is applied to both (``auxiliary_weight`` on the second).
        auxiliary_weight: weight of the auxiliary loss (0.4 in the paper).
        drop_path_rate: probability of dropping each non-identity operation's output per
            sample in training (0.2 in the paper, where the reference ramps it linearly from 0
            over the epochs; here it is constant).
        stem_multiplier: stem width as a multiple of ``init_channels`` (3).
        dropout: dropout before the classifier (the reference has none).

    Example:
        >>> model = DartsNet(10, (32, 32, 3), genotype="DARTS_V2", init_channels=36, layers=20)
        >>> model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))

    Reference:
        Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] | list[int] = (32, 32, 3),
        genotype: str | dict[str, Any] = "DARTS_V2",
        init_channels: int = 36,
        layers: int = 20,
        auxiliary: bool = False,
        auxiliary_weight: float = 0.4,
        drop_path_rate: float = 0.0,
        stem_multiplier: int = 3,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        if layers < 3:
            raise UserError(f"darts_net: layers must be at least 3. Received: {layers}")
        if auxiliary and num_classes == 0:
            raise UserError("darts_net: the auxiliary tower needs num_classes > 0")
        geno = load_genotype(genotype)
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        c_curr = stem_multiplier * init_channels
        x = keras.layers.Conv2D(c_curr, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
        s0 = s1 = get_norm_layer("batch", name="stem_bn")(x)
        c_curr = init_channels
        reductions = reduction_indices(layers)
        reduction_prev = False
        aux_logits = None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            out = _cell(
                s0, s1, geno, c_curr, reduction, reduction_prev, drop_path_rate, name=f"cell{i}"
            )
            s0, s1 = s1, out
            reduction_prev = reduction
            if auxiliary and i == reductions[1]:
                aux_logits = _auxiliary_head(s1, num_classes)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(s1)
        outputs = classifier_head(x, num_classes, dropout)
        aux_graph = (
            keras.Model(inputs, [outputs, aux_logits], name="with_aux") if auxiliary else None
        )
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._aux_graph = _Hidden(aux_graph)
        # The tower's layers are not in the inference graph: track them so that they are trained
        # and saved with the model.
        in_graph = {id(layer) for layer in self.layers}
        self.auxiliary_layers = [
            layer for layer in (aux_graph.layers if aux_graph else []) if id(layer) not in in_graph
        ]
        # A preset stays a name; a file is inlined so that the saved model does not need the file.
        self.genotype = (
            genotype if isinstance(genotype, str) and genotype in PRESETS else geno.to_dict()
        )

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` for ``features_only``: the stem, then the last cell at each
        resolution (before each reduction cell, and the last cell)."""
        first, second = reduction_indices(self.layers_)
        cells = (first - 1, second - 1, self.layers_ - 1)
        return [("stem_bn", 1), *((f"cell{c}_out", 2**i) for i, c in enumerate(cells))]

    def call(self, inputs, training=None, mask=None, **kwargs):
        if training and self._aux_graph.value is not None:
            return tuple(self._aux_graph.value(inputs, training=True))
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if isinstance(y_pred, tuple):
            logits, aux = y_pred
            loss = super().compute_loss(x, y, logits, sample_weight, training=training)
            aux_loss = self._compile_loss(y, aux, sample_weight)
            return loss + keras.ops.cast(self.auxiliary_weight, loss.dtype) * aux_loss
        return super().compute_loss(x, y, y_pred, sample_weight, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, tuple):
            y_pred = y_pred[0]
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)


VARIANTS = {"darts_net": dict(genotype="DARTS_V2", init_channels=36, layers=20)}

register_variants(
    DartsNet,
    VARIANTS,
    family="darts",
    paper="Liu et al. 2019 (DARTS)",
    year=2019,
    default_input=(32, 32, 3),
    min_input=8,
)
