"""The DARTS search network: cells of mixed operations weighted by softmax(alpha).

Every edge ``j -> i`` of a cell is a :class:`MixedOp`: the softmax-weighted sum of all candidate
operations (:data:`kerasdl.layers.darts_ops.PRIMITIVES`), eq. 1 of the paper. All normal cells share
one matrix of architecture parameters ``alphas_normal`` (edges x ops) and all reduction cells share
``alphas_reduce``. Operations use batch norm without scale/offset (``affine=False``) and pooling is
followed by such a batch norm, as in the reference ``model_search.py``.

Reference:
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, section 2.1;
    https://github.com/quark0/darts (``cnn/model_search.py``).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.base import build_chain
from kerasdl.layers.darts_ops import PRIMITIVES, FactorizedReduce, ReLUConvBN, make_op
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.models.darts import reduction_indices
from kerasdl.nas.genotype import Genotype, derive_genotype


def num_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` intermediate nodes (node i has i + 2 inputs): 14 for 4."""
    return sum(i + 2 for i in range(steps))


@keras.saving.register_keras_serializable(package="kerasdl")
class MixedOp(ConfigurableLayer):
    """One edge of the search cell: ``sum_k softmax(alpha)_k * op_k(x)`` over the candidates.

    Args:
        channels: input = output channels.
        stride: 1, or 2 on the input edges of a reduction cell.
        primitives: candidate operation names.

    Call arguments:
        x: ``(B, H, W, channels)``.
        weights: ``(len(primitives),)`` mixing weights (the softmax of the edge's alphas).
        training: batch statistics in the batch norms when true.

    Example:
        >>> op = MixedOp(8)
        >>> y = op(keras.ops.ones((2, 8, 8, 8)), keras.ops.ones((8,)) / 8)

    Reference:
        Liu et al., DARTS, ICLR 2019, eq. 1 (``MixedOp`` in ``model_search.py``).
    """

    def __init__(
        self, channels: int, stride: int = 1, primitives: tuple[str, ...] = PRIMITIVES, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.channels, self.stride, self.primitives = channels, stride, tuple(primitives)
        self.candidates = []
        for p in self.primitives:
            op = make_op(p, channels, stride, affine=False, name=p)
            chain = [op]
            if "pool" in p:  # the reference follows pooling with a non-affine batch norm
                chain.append(get_norm_layer("batch", name=f"{p}_bn", center=False, scale=False))
            self.candidates.append(chain)

    def build(self, input_shape):
        for chain in self.candidates:
            build_chain(chain, input_shape)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.candidates[0]:  # every candidate gives the same shape
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def candidate_outputs(self, x, training=None) -> list:
        """Each candidate's output on ``x`` (what the mixed op weights)."""
        outs = []
        for chain in self.candidates:
            h = x
            for layer in chain:
                h = layer(h, training=training)
            outs.append(h)
        return outs

    def call(self, x, weights, training=None):
        outs = self.candidate_outputs(x, training=training)
        total = None
        for k, h in enumerate(outs):
            term = ops.cast(weights[k], h.dtype) * h
            total = term if total is None else total + term
        return total


@keras.saving.register_keras_serializable(package="kerasdl")
class SearchCell(ConfigurableLayer):
    """A search cell: two preprocessed inputs, ``steps`` nodes, each the sum of mixed edges.

    Node ``i`` sums ``MixedOp(states[j])`` over all earlier states ``j``; the output concatenates
    the last ``multiplier`` nodes.

    Args:
        channels: channels ``C`` of every node.
        reduction: stride 2 on the edges from the cell inputs.
        reduction_prev: the previous cell reduced (the first input is then factorized-reduced).
        steps: intermediate nodes (4).
        multiplier: nodes concatenated into the output (4).
        primitives: candidate operation names.

    Call arguments:
        inputs: ``[s0, s1]``, the outputs of the cells two back and one back.
        weights: ``(edges, ops)`` softmax of the cell type's alphas.
        training: batch statistics when true.

    Example:
        >>> cell = SearchCell(8, reduction=False, reduction_prev=False)
        >>> x = keras.ops.ones((2, 8, 8, 24))
        >>> y = cell([x, x], keras.ops.ones((14, 8)) / 8)  # (2, 8, 8, 32)

    Reference:
        Liu et al., DARTS, ICLR 2019, section 2.1 (``Cell`` in ``model_search.py``).
    """

    def __init__(
        self,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        steps: int = 4,
        multiplier: int = 4,
        primitives: tuple[str, ...] = PRIMITIVES,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.channels, self.reduction, self.reduction_prev = channels, reduction, reduction_prev
        self.steps, self.multiplier, self.primitives = steps, multiplier, tuple(primitives)
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(channels, affine=False, name="pre0")
        else:
            self.preprocess0 = ReLUConvBN(channels, affine=False, name="pre0")
        self.preprocess1 = ReLUConvBN(channels, affine=False, name="pre1")
        self.edges = []
        for i in range(steps):
            for j in range(i + 2):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(channels, stride, primitives, name=f"edge_{j}_{i + 2}"))

    def build(self, input_shape):
        self._node_shapes(input_shape, build=True)

    def compute_output_shape(self, input_shape):
        *_, last = self._node_shapes(input_shape)
        return (*last[:-1], self.multiplier * self.channels)

    def _node_shapes(self, input_shape, build: bool = False) -> list[tuple]:
        """The shapes of the cell's states (inputs preprocessed, then the nodes), in the order
        ``call`` computes them; with ``build``, each sub-layer is built on its input's shape."""

        def apply(layer: keras.layers.Layer, shape: tuple) -> tuple:
            return build_chain([layer], shape) if build else layer.compute_output_shape(shape)

        states = [apply(self.preprocess0, input_shape[0]), apply(self.preprocess1, input_shape[1])]
        offset = 0
        for _ in range(self.steps):
            node = [apply(self.edges[offset + j], h) for j, h in enumerate(states)][-1]
            offset += len(states)
            states.append(tuple(node))
        return states

    def call(self, inputs, weights, training=None):
        s0 = self.preprocess0(inputs[0], training=training)
        s1 = self.preprocess1(inputs[1], training=training)
        states = [s0, s1]
        offset = 0
        for _ in range(self.steps):
            s = None
            for j, h in enumerate(states):
                out = self.edges[offset + j](h, weights[offset + j], training=training)
                s = out if s is None else s + out
            offset += len(states)
            states.append(s)
        return ops.concatenate(states[-self.multiplier :], axis=-1)


@keras.saving.register_keras_serializable(package="kerasdl")
class SearchNetwork(keras.Model):
    """The DARTS over-parameterized network with architecture parameters alpha.

    Stem (3x3 conv to ``stem_multiplier * C`` channels + BN), ``layers`` search cells with
    reductions at 1/3 and 2/3 of the depth, global average pooling and a linear classifier. The
    architecture parameters ``alphas_normal`` and ``alphas_reduce`` (``edges x ops``, initialised
    to ``1e-3 * N(0, 1)``) are weights of this model; :attr:`arch_variables` and
    :attr:`weight_variables` separate them from the network weights for the bilevel optimization
    (:class:`kerasdl.nas.search.DartsSearch`).

    Args:
        num_classes: output classes (logits).
        input_shape: ``(H, W, C)``.
        init_channels: ``C`` of the first cells (16 in the paper's search).
        layers: number of cells (8 in the paper's search).
        steps: intermediate nodes per cell (4).
        multiplier: nodes concatenated into a cell's output (4).
        stem_multiplier: stem width as a multiple of ``init_channels`` (3).
        seed: seed of the alpha initialisation.

    Call arguments:
        x: ``(B, H, W, C)`` images.
        training: batch statistics when true.

    Example:
        >>> net = SearchNetwork(10, (16, 16, 1), init_channels=8, layers=5)
        >>> logits = net(keras.ops.zeros((2, 16, 16, 1)))
        >>> net.genotype().normal[:2]

    Reference:
        Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] | list[int] = (32, 32, 3),
        init_channels: int = 16,
        layers: int = 8,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.input_shape_ = num_classes, tuple(input_shape)
        self.init_channels, self.layers_count = init_channels, layers
        self.steps, self.multiplier, self.stem_multiplier = steps, multiplier, stem_multiplier
        self.seed = seed
        c_curr = stem_multiplier * init_channels
        self.stem_conv = keras.layers.Conv2D(
            c_curr, 3, padding="same", use_bias=False, name="stem_conv"
        )
        self.stem_bn = get_norm_layer("batch", name="stem_bn")
        c_curr = init_channels
        reductions = reduction_indices(layers)
        self.cells = []
        reduction_prev = False
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            self.cells.append(
                SearchCell(c_curr, reduction, reduction_prev, steps, multiplier, name=f"cell{i}")
            )
            reduction_prev = reduction
        self.global_pool = keras.layers.GlobalAveragePooling2D(name="avg_pool")
        self.classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier")

    def build(self, input_shape):
        init = keras.initializers.RandomNormal(stddev=1e-3, seed=self.seed)
        shape = (num_edges(self.steps), len(PRIMITIVES))
        self.alphas_normal = self.add_weight(shape=shape, initializer=init, name="alphas_normal")
        self.alphas_reduce = self.add_weight(shape=shape, initializer=init, name="alphas_reduce")
        # every sub-layer built on its input's shape (DESIGN.md convention 3), not by a symbolic
        # run of the whole network, which took 2.6x as long (initial values are the same: Keras
        # seeds each unseeded initializer when the layer is made)
        s0 = s1 = build_chain([self.stem_conv, self.stem_bn], input_shape)
        for cell in self.cells:
            if not cell.built:
                cell.build([s0, s1])
            s0, s1 = s1, tuple(cell.compute_output_shape([s0, s1]))
        build_chain([self.global_pool, self.classifier], s1)
        self.built = True

    @property
    def arch_variables(self) -> list:
        """The architecture parameters ``[alphas_normal, alphas_reduce]``."""
        return [self.alphas_normal, self.alphas_reduce]

    @property
    def weight_variables(self) -> list:
        """Every trainable variable except the architecture parameters."""
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def call(self, x, training=None):
        w_normal = ops.softmax(self.alphas_normal, axis=-1)
        w_reduce = ops.softmax(self.alphas_reduce, axis=-1)
        s0 = s1 = self.stem_bn(self.stem_conv(x), training=training)
        for cell in self.cells:
            weights = w_reduce if cell.reduction else w_normal
            s0, s1 = s1, cell([s0, s1], weights, training=training)
        return self.classifier(self.global_pool(s1))

    def arch_weights(self) -> dict[str, np.ndarray]:
        """The softmax of each cell type's alphas, ``{"normal": (edges, ops), "reduce": ...}``."""
        return {
            "normal": np.asarray(ops.softmax(self.alphas_normal, axis=-1)),
            "reduce": np.asarray(ops.softmax(self.alphas_reduce, axis=-1)),
        }

    def genotype(self) -> Genotype:
        """The discrete architecture the current alphas encode (top-2 edges per node)."""
        return derive_genotype(
            np.asarray(self.alphas_normal),
            np.asarray(self.alphas_reduce),
            self.steps,
            self.multiplier,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape_),
            "init_channels": self.init_channels,
            "layers": self.layers_count,
            "steps": self.steps,
            "multiplier": self.multiplier,
            "stem_multiplier": self.stem_multiplier,
            "seed": self.seed,
        }
