"""DARTS: mixed operation, bilevel gradient isolation, derivation, derived network, presets."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl.errors import UserError
from kerasdl.layers.darts_ops import PRIMITIVES, DilConv, FactorizedReduce, Pool3x3, SepConv
from kerasdl.models.darts import DartsNet
from kerasdl.nas.genotype import PRESETS, Genotype, derive_genotype, load_genotype, parse_cell
from kerasdl.nas.search import DartsSearch, default_weight_optimizer
from kerasdl.nas.search_model import MixedOp, SearchNetwork, num_edges

OP = {p: k for k, p in enumerate(PRIMITIVES)}


def _batch(seed: int, n: int = 8, size: int = 8, channels: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, channels)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, n), 10).astype("float32")
    return tf.constant(x), tf.constant(y)


# --- operations and the mixed operation ------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_is_softmax_weighted_sum_of_candidates(stride):
    op = MixedOp(4, stride)
    x = tf.random.stateless_normal((2, 8, 8, 4), seed=(1, 2))
    alpha = tf.constant(np.random.default_rng(0).normal(size=len(PRIMITIVES)), tf.float32)
    weights = tf.nn.softmax(alpha)
    mixed = op(x, weights, training=False)
    outs = []
    for chain in op.candidates:  # run each candidate on its own
        h = x
        for layer in chain:
            h = layer(h, training=False)
        outs.append(h.numpy())
    assert mixed.shape == (2, 8 // stride, 8 // stride, 4)
    expected = sum(w * o for w, o in zip(weights.numpy(), outs, strict=True))
    np.testing.assert_allclose(mixed.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(outs[OP["sep_conv_3x3"]], outs[OP["max_pool_3x3"]])
    np.testing.assert_array_equal(outs[OP["none"]], 0.0)
    # A one-hot weight selects exactly one candidate.
    one_hot = tf.one_hot(OP["dil_conv_5x5"], len(PRIMITIVES))
    np.testing.assert_allclose(
        op(x, one_hot, training=False).numpy(), outs[OP["dil_conv_5x5"]], atol=1e-6
    )


def test_strided_ops_match_pytorch_padding():
    x = tf.reshape(tf.range(2 * 6 * 6 * 2, dtype=tf.float32), (2, 6, 6, 2))
    # avg pool 3x3/2, padding 1, count_include_pad=False: corner window holds 4 real pixels.
    avg = Pool3x3("avg", 2)(x).numpy()
    xn = x.numpy()
    np.testing.assert_allclose(avg[0, 0, 0], xn[0, :2, :2].mean(axis=(0, 1)))
    np.testing.assert_allclose(avg[0, 1, 1], xn[0, 1:4, 1:4].mean(axis=(0, 1)))
    mx = Pool3x3("max", 2)(-x).numpy()  # all negative: -inf padding, never zero
    np.testing.assert_allclose(mx[0, 0, 0], (-xn[0, :2, :2]).max(axis=(0, 1)))
    # FactorizedReduce sees both pixel phases; odd sizes give ceil(H/2).
    assert FactorizedReduce(8)(tf.zeros((1, 7, 7, 3))).shape == (1, 4, 4, 8)
    # Stride-2 dilated depthwise conv equals the stride-1 dilated conv subsampled at even places.
    dil2 = DilConv(2, 3, stride=2, affine=False)
    dil1 = DilConv(2, 3, stride=1, affine=False)
    dil2(x)
    dil1(x)
    depth2 = [w for w in dil2.weights if "depthwise" in w.path][0]
    depth1 = [w for w in dil1.weights if "depthwise" in w.path][0]
    depth1.assign(depth2)
    point = lambda m: [w for w in m.weights if "pointwise" in w.path][0]  # noqa: E731
    point(dil1).assign(point(dil2))
    # Inference-mode BN with fresh statistics is the same fixed scaling in both.
    a = dil2(x, training=False).numpy()
    b = dil1(x, training=False).numpy()[:, ::2, ::2]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert SepConv(2, 5, stride=2)(x).shape == (2, 3, 3, 2)


@pytest.mark.parametrize("size", [7, 8])
def test_factorized_reduce_is_two_offset_stride2_pointwise_convolutions(size):
    """Both phases of the reference's ``conv_1(x)`` and ``conv_2(x[:, :, 1:, 1:])`` (stride 2),
    the shifted one zero-padded at the bottom/right for odd sizes; computed here in NumPy (the
    layer runs stride-1 convolutions on the subsampled input)."""
    fr = FactorizedReduce(4, affine=False)
    x = tf.random.stateless_normal((2, size, size, 3), seed=(3, 4))
    got = fr(x, training=False).numpy()
    r = np.maximum(x.numpy(), 0.0)
    shifted = np.pad(r[:, 1:, 1:], [(0, 0), (0, 1), (0, 1), (0, 0)])
    k1, k2 = fr.conv_1.kernel.numpy()[0, 0], fr.conv_2.kernel.numpy()[0, 0]
    want = np.concatenate([r[:, ::2, ::2] @ k1, shifted[:, ::2, ::2] @ k2], axis=-1)
    want = want / np.sqrt(1.0 + 1e-5)  # inference BN with fresh statistics (DARTS eps 1e-5)
    assert got.shape == (2, (size + 1) // 2, (size + 1) // 2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- bilevel optimization ---------------------------------------------------------------------


def test_the_search_network_builds_by_shape_with_the_weights_a_symbolic_run_gives(monkeypatch):
    """Cells and mixed ops build their sub-layers on shapes (DESIGN.md convention 3): every layer
    built without running the network, and the same initial weights as Keras's build by a
    symbolic run of ``call`` (what the search did before, at 2.6 times the time)."""
    from kerasdl.nas.search_model import SearchCell

    def network():
        keras.utils.set_random_seed(3)
        return SearchNetwork(
            10, (8, 8, 1), init_channels=2, layers=3, steps=2, multiplier=2, name="search"
        )

    by_shape = network()
    by_shape.build((None, 8, 8, 1))
    assert all(layer.built for layer in by_shape._flatten_layers())
    count = len(by_shape.weights)
    x = tf.random.stateless_normal((2, 8, 8, 1), seed=(0, 1))
    assert by_shape(x, training=False).shape == (2, 10)
    assert len(by_shape.weights) == count  # the call created nothing more
    cell = by_shape.cells[1]  # a reduction cell after a normal one
    shapes = [(2, 8, 8, 6), (2, 8, 8, 4)]
    out = cell([tf.zeros(s) for s in shapes], tf.ones((num_edges(2), len(PRIMITIVES))))
    assert tuple(cell.compute_output_shape(shapes)) == tuple(out.shape) == (2, 4, 4, 8)

    def alphas_only(self, input_shape):  # the old build: alphas here, the rest by a call
        init = keras.initializers.RandomNormal(stddev=1e-3, seed=self.seed)
        shape = (num_edges(self.steps), len(PRIMITIVES))
        self.alphas_normal = self.add_weight(shape=shape, initializer=init, name="alphas_normal")
        self.alphas_reduce = self.add_weight(shape=shape, initializer=init, name="alphas_reduce")

    monkeypatch.setattr(SearchNetwork, "build", alphas_only)
    monkeypatch.delattr(SearchCell, "build")
    monkeypatch.delattr(MixedOp, "build")
    by_run = network()
    by_run(x, training=False)
    assert [v.path for v in by_run.weights] == [v.path for v in by_shape.weights]
    for a, b in zip(by_run.weights, by_shape.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def tiny_search() -> DartsSearch:
    """Three one-node cells (normal, reduction, reduction), shared: the gradient function is
    traced once. Each test restores the state it starts from."""
    keras.utils.set_random_seed(0)
    net = SearchNetwork(10, (8, 8, 1), init_channels=2, layers=3, steps=1, multiplier=1, seed=0)
    search = DartsSearch(net)
    search.compile(optimizer=default_weight_optimizer(100), jit_compile=False)
    search.steps = {u: tf.function(search.train_step) for u in (False, True)}
    return search


def _tiny(search: DartsSearch, unrolled: bool = False):
    search.unrolled = unrolled
    search.arch_optimizer.learning_rate.assign(3e-4)
    return search, search.steps[unrolled]


def _state(search: DartsSearch) -> list:
    return [*search.variables, *search.optimizer.variables, *search.arch_optimizer.variables]


def _step_from(search, step, saved, train, val):
    for v, s in zip(_state(search), saved, strict=True):
        v.assign(s)
    step((train, val))
    net = search.network
    return [v.numpy() for v in net.arch_variables], [v.numpy() for v in net.weight_variables]


def _differ(xs, ys) -> bool:
    return any(not np.allclose(a, b) for a, b in zip(xs, ys, strict=True))


def test_alphas_learn_only_from_val_and_weights_only_from_train(tiny_search):
    search, step = _tiny(tiny_search)
    train, train2 = _batch(1), _batch(2)
    val, val2 = _batch(3), _batch(4)
    step((train, val))  # builds the optimizers' state
    saved = [v.numpy() for v in _state(search)]
    alphas, weights = _step_from(search, step, saved, train, val)
    # A different training batch leaves the alpha update unchanged (first order) ...
    alphas_t2, weights_t2 = _step_from(search, step, saved, train2, val)
    for a, b in zip(alphas, alphas_t2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _differ(weights, weights_t2)
    # ... and a different validation batch changes the alphas.
    alphas_v2, _ = _step_from(search, step, saved, train, val2)
    assert _differ(alphas[:1], alphas_v2[:1]) and _differ(alphas[1:], alphas_v2[1:])
    # With the architecture frozen (lr 0) the weight update ignores the validation batch.
    search.arch_optimizer.learning_rate.assign(0.0)
    saved = [v.numpy() for v in _state(search)]  # the state includes the learning rate
    alphas_f, w1 = _step_from(search, step, saved, train, val)
    _, w2 = _step_from(search, step, saved, train, val2)
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)
    arch_ids = {id(a) for a in search.network.arch_variables}
    before = [s for v, s in zip(_state(search), saved, strict=True) if id(v) in arch_ids]
    assert not _differ(alphas_f, before)


def test_second_order_uses_train_batch_and_restores_weights(tiny_search):
    search, step = _tiny(tiny_search)
    train, val = _batch(1), _batch(3)
    step((train, val))  # a first-order step fills the momentum the virtual step reads
    search.unrolled = True
    before = [v.numpy() for v in search.network.weight_variables]
    g1, _, _ = search.arch_gradients(train, val)
    after = [v.numpy() for v in search.network.weight_variables]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    g2, _, _ = search.arch_gradients(_batch(6), val)
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in zip(g1, g2, strict=True))
    # The second-order gradient differs from the first-order one by the implicit term.
    search.unrolled = False
    g_first, _, _ = search.arch_gradients(train, val)
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in zip(g1, g_first, strict=True))


# --- derivation -------------------------------------------------------------------------------


def test_derivation_top2_edges_zero_excluded():
    a = np.zeros((num_edges(4), len(PRIMITIVES)))
    # node 2: edges 0 (0->2), 1 (1->2)
    a[0, OP["sep_conv_3x3"]] = 5.0
    a[1, OP["none"]] = 10.0  # none dominates the edge but is never chosen
    a[1, OP["max_pool_3x3"]] = 4.0
    # node 3: edges 2 (0->3), 3 (1->3), 4 (2->3)
    a[2, OP["skip_connect"]] = 2.0
    a[3, OP["avg_pool_3x3"]] = 1.0
    a[4, OP["dil_conv_5x5"]] = 3.0
    # node 4: edges 5..8 (inputs 0..3): 'none' strongest on input 3, weak otherwise
    a[5, OP["sep_conv_5x5"]] = 2.5
    a[6, OP["dil_conv_3x3"]] = 2.6
    a[7, OP["skip_connect"]] = 1.0
    a[8, OP["none"]] = 9.0
    # node 5: edges 9..13 (inputs 0..4)
    a[12, OP["sep_conv_3x3"]] = 1.5
    a[13, OP["max_pool_3x3"]] = 1.4
    gene = parse_cell(np.exp(a) / np.exp(a).sum(1, keepdims=True), steps=4)
    assert gene == [
        ("sep_conv_3x3", 0),
        ("max_pool_3x3", 1),
        ("dil_conv_5x5", 2),
        ("skip_connect", 0),
        ("dil_conv_3x3", 1),
        ("sep_conv_5x5", 0),
        ("sep_conv_3x3", 3),
        ("max_pool_3x3", 4),
    ]
    g = derive_genotype(a, a[:, ::-1].copy())
    assert list(g.normal) == gene and g.normal_concat == (2, 3, 4, 5)
    assert all(op != "none" for op, _ in g.reduce)
    # Round trip through JSON and load_genotype.
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_presets_and_genotype_errors(tmp_path):
    v2 = load_genotype("DARTS_V2")
    assert v2.normal[:2] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    assert v2.normal[-1] == ("dil_conv_3x3", 2) and v2.reduce[-1] == ("max_pool_3x3", 1)
    assert v2.normal_concat == v2.reduce_concat == (2, 3, 4, 5)
    assert set(PRESETS) >= {"DARTS_V1", "DARTS_V2"}
    path = tmp_path / "g.json"
    v2.save(path)
    assert load_genotype(str(path)) == v2
    with pytest.raises(UserError, match="not a preset"):
        load_genotype("NOPE")
    bad = v2.to_dict()
    bad["normal"][3] = ["conv_9x9", 0]
    with pytest.raises(UserError, match=r"normal\[3\]"):
        load_genotype(bad)
    bad = v2.to_dict()
    bad["reduce"][0] = ["skip_connect", 2]  # node 2 cannot read itself
    with pytest.raises(UserError, match="inputs 0..1"):
        load_genotype(bad)


# --- derived network --------------------------------------------------------------------------


def _pytorch_param_count(geno, c, layers, num_classes, in_ch, auxiliary):
    """Parameters of the reference NetworkCIFAR, counted from its module definitions."""
    relu_conv_bn = lambda ci, co: ci * co + 2 * co  # noqa: E731
    fact_reduce = lambda ci, co: 2 * ci * (co // 2) + 2 * co  # noqa: E731
    op_params = {
        "sep_conv_3x3": lambda c: 2 * (9 * c + c * c + 2 * c),
        "sep_conv_5x5": lambda c: 2 * (25 * c + c * c + 2 * c),
        "dil_conv_3x3": lambda c: 9 * c + c * c + 2 * c,
        "dil_conv_5x5": lambda c: 25 * c + c * c + 2 * c,
    }
    total = in_ch * 3 * c * 9 + 2 * 3 * c
    cpp, cp, cc = 3 * c, 3 * c, c
    red_prev = False
    for i in range(layers):
        red = i in (layers // 3, 2 * layers // 3)
        cc = cc * 2 if red else cc
        total += fact_reduce(cpp, cc) if red_prev else relu_conv_bn(cpp, cc)
        total += relu_conv_bn(cp, cc)
        gene = geno.reduce if red else geno.normal
        for op, idx in gene:
            if op == "skip_connect" and red and idx < 2:
                total += fact_reduce(cc, cc)
            total += op_params.get(op, lambda c: 0)(cc)
        red_prev = red
        cpp, cp = cp, 4 * cc
        if i == 2 * layers // 3:
            c_aux = cp
    total += cp * num_classes + num_classes
    if auxiliary:
        total += c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * num_classes + num_classes
    return total


def _trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_darts_v2_parameter_count_at_min_input():
    from kerasdl.registry import create_model, get_entry

    entry = get_entry("darts_net")
    side = entry.min_input
    model = create_model("darts_net", num_classes=10, input_shape=(side, side, 3))
    # The paper's 3.3M; 3,349,342 is what the reference train.py prints for DARTS_V2.
    assert _trainable(model) == 3_349_342
    assert _pytorch_param_count(load_genotype("DARTS_V2"), 36, 20, 10, 3, False) == 3_349_342
    out = model(tf.random.normal((2, side, side, 3)), training=False)
    assert out.shape == (2, 10) and np.isfinite(out.numpy()).all()


def test_derived_network_trains_and_round_trips(tmp_path):
    from sklearn.datasets import load_digits

    geno = {
        "normal": [
            ["sep_conv_3x3", 0],
            ["dil_conv_5x5", 1],
            ["skip_connect", 0],
            ["avg_pool_3x3", 2],
            ["sep_conv_5x5", 3],
            ["max_pool_3x3", 1],
            ["dil_conv_3x3", 4],
            ["skip_connect", 2],
        ],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [
            ["max_pool_3x3", 0],
            ["skip_connect", 1],
            ["sep_conv_3x3", 2],
            ["dil_conv_3x3", 0],
            ["avg_pool_3x3", 1],
            ["skip_connect", 3],
            ["sep_conv_5x5", 4],
            ["dil_conv_5x5", 1],
        ],
        "reduce_concat": [2, 3, 4, 5],
    }
    digits = load_digits()
    x = (digits.images[:64, :, :, None] / 16.0).astype("float32")
    y = keras.utils.to_categorical(digits.target[:64], 10)
    keras.utils.set_random_seed(0)
    model = DartsNet(10, (8, 8, 1), genotype=geno, init_channels=4, layers=3, drop_path_rate=0.2)
    model.compile(
        keras.optimizers.SGD(0.025, momentum=0.9),
        keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    before = [w.numpy() for w in model.trainable_weights]
    hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert all(
        not np.array_equal(a, w.numpy())
        for a, w in zip(before, model.trainable_weights, strict=True)
    )
    path = tmp_path / "darts.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["genotype"] == geno
    np.testing.assert_allclose(loaded(x[:8]).numpy(), model(x[:8]).numpy(), rtol=1e-5, atol=1e-5)


def test_auxiliary_tower_loss_and_params(tmp_path):
    keras.utils.set_random_seed(0)
    model = DartsNet(10, (32, 32, 3), "DARTS_V2", init_channels=4, layers=3, auxiliary=True)
    geno = load_genotype("DARTS_V2")
    assert _trainable(model) == _pytorch_param_count(geno, 4, 3, 10, 3, True)
    x, y = _batch(0, n=4, size=32, channels=3)
    logits, aux = model(x, training=True)
    assert logits.shape == aux.shape == (4, 10)
    assert model(x, training=False).shape == (4, 10)  # inference: main logits only
    model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))
    ce = keras.losses.CategoricalCrossentropy(from_logits=True)
    loss = model.compute_loss(x, y, (logits, aux))
    np.testing.assert_allclose(float(loss), float(ce(y, logits) + 0.4 * ce(y, aux)), rtol=1e-5)
    aux_kernel = model.auxiliary_layers[-1].kernel
    start = aux_kernel.numpy()
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(start, aux_kernel.numpy())
    model.save(tmp_path / "aux.keras")
    loaded = keras.saving.load_model(tmp_path / "aux.keras")
    np.testing.assert_allclose(loaded.auxiliary_layers[-1].kernel.numpy(), aux_kernel.numpy())
    with pytest.raises(UserError, match="auxiliary"):
        DartsNet(10, (16, 16, 1), "DARTS_V2", init_channels=4, layers=3, auxiliary=True)


def test_search_recipe_validation(tmp_path):
    from kerasdl.nas.config import load_search_recipe

    path = tmp_path / "r.yaml"
    path.write_text("search: {layers: 2, init_channels: 4}\ndata: {source: digits}\n")
    recipe = load_search_recipe(path, ["search.unrolled=true"])
    assert recipe.search.unrolled and recipe.search.arch_beta_1 == 0.5
    assert recipe.search.learning_rate == 0.025 and recipe.search.arch_weight_decay == 1e-3
    with pytest.raises(UserError, match="search.epochs"):
        load_search_recipe(path, ["search.epochs=0"])
    with pytest.raises(UserError, match="Unknown key"):
        load_search_recipe(path, ["search.nodez=3"])


@pytest.mark.slow
def test_search_command_writes_run_folder(tmp_path):
    from kerasdl.cli import main

    recipe = tmp_path / "s.yaml"
    recipe.write_text(
        "search: {layers: 1, init_channels: 2, nodes: 2, epochs: 1, batch_size: 64}\n"
        "data: {source: digits, image_size: 8}\n"
        f"run: {{name: s, output_dir: '{tmp_path}/runs'}}\n"
    )
    assert main(["search", str(recipe), "--quiet"]) == 0
    (run_dir,) = [p for p in (tmp_path / "runs" / "s").iterdir() if p.is_dir()]
    for name in ("genotype.json", "normal.png", "reduce.png", "alphas.json", "config.yaml"):
        assert (run_dir / name).is_file(), name
    geno = load_genotype(str(run_dir / "genotype.json"))
    assert len(geno.normal) == 4
    assert (tmp_path / "runs" / "s" / "genotype.json").is_file()
