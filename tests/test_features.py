"""create_model(..., features_only=True): stage feature maps with timm's feature_info.

Every family: output shapes equal feature_info at a small input, the maps are the classifier's own
intermediate activations (shared weights), out_indices selection and errors, timm's own
feature_info for the architectures timm has (built live on the meta device: no weights),
``.keras`` round trip, gradients and training through a small head, SavedModel export.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl.errors import UserError
from kerasdl.models.features import FeatureInfo, FeatureModel, feature_table, features_model
from kerasdl.registry import create_model, get_entry, list_models

REPO = Path(__file__).resolve().parent.parent
SLOW = pytest.mark.slow
TINY_VIT = dict(patch_size=8, hidden_dim=32, num_layers=4, num_heads=2, mlp_dim=64)
_SMALL_FC = dict(fc_units=16)  # the fully connected layers are not features: keep them small

# case id -> (registry name, input side, constructor overrides): every family and style.
CASES = {
    "resnet18": ("resnet18", 64, {}),
    "resnet20": ("resnet20", 32, {}),
    "resnet20_plain": ("resnet20", 32, dict(residual=False)),
    "wrn_28_2": ("wrn_28_2", 32, {}),
    "vgg11_bn": ("vgg11_bn", 64, _SMALL_FC),
    "vgg11": ("vgg11", 64, _SMALL_FC),
    "alexnet": ("alexnet", 64, _SMALL_FC),
    "alexnet_owt": ("alexnet_owt", 64, _SMALL_FC),
    "densenet121": ("densenet121", 64, {}),
    "googlenet_aux": ("googlenet", 64, dict(aux_logits=True)),
    "efficientnet_b0": ("efficientnet_b0", 64, {}),
    "darts_net_aux": ("darts_net", 32, dict(layers=5, init_channels=8, auxiliary=True)),
    "simple_cnn": ("simple_cnn", 32, {}),
    "vit_ti_16": ("vit_ti_16", 64, {}),
}
# Unpadded pooling (as torchvision): maps are one smaller than input / reduction.
VALID_POOLING = {"alexnet", "alexnet_owt"}

# kerasdl name -> timm name where they differ (the rest are spelled alike).
TIMM_NAMES = {
    "vit_ti_16": "vit_tiny_patch16_224",
    "vit_s_16": "vit_small_patch16_224",
    "vit_b_16": "vit_base_patch16_224",
    "vit_b_32": "vit_base_patch32_224",
    "vit_l_16": "vit_large_patch16_224",
    "vit_l_32": "vit_large_patch32_224",
    "vit_h_14": "vit_huge_patch14_224",
}
# Too large to build here (0.3-0.6 B parameters); their stages follow vit_b_16's rule.
TIMM_SKIP = {"vit_l_16", "vit_l_32", "vit_h_14"}


def images(side: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, side, side, 3), dtype=np.float32)


@functools.cache
def built(case: str) -> tuple[keras.Model, FeatureModel]:
    """The classifier of a case and its all-stages feature model (built once per session)."""
    name, side, kwargs = CASES[case]
    clf = create_model(name, num_classes=3, input_shape=(side, side, 3), **kwargs)
    return clf, FeatureModel(clf, out_indices=list(range(len(clf.feature_stages()))))


def timm_feature_info(name: str, **kwargs) -> list[dict]:
    try:
        from kerasdl.interop import import_timm

        timm = import_timm()
    except UserError as err:
        pytest.skip(str(err))
    name = TIMM_NAMES.get(name, name)
    model = timm.create_model(name, features_only=True, device="meta", **kwargs)  # no weights
    return model.feature_info.get_dicts()


def timm_counterparts() -> list[str]:
    """Registry names of the families timm has (spelled alike, or in :data:`TIMM_NAMES`)."""
    families = {"resnet", "densenet", "efficientnet", "vgg", "vit"}
    return [n for n in list_models() if get_entry(n).family in families and n not in TIMM_SKIP]


# --- every family ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_maps_match_feature_info_and_the_classifier(case):
    clf, feats = built(case)
    side = CASES[case][1]
    info = feats.feature_info
    assert isinstance(info, FeatureInfo) and isinstance(info, list)
    assert [sorted(d) for d in info] == [["index", "module", "num_chs", "reduction"]] * len(info)
    assert info.reduction() == sorted(info.reduction())  # timm: non-decreasing
    assert info.channels() == [d["num_chs"] for d in info]
    x = images(side)
    maps = feats.predict(x, verbose=0)
    assert len(maps) == len(info)
    for m, d in zip(maps, info, strict=True):
        assert m.shape[0] == 2 and m.shape[-1] == d["num_chs"], (d, m.shape)
        expected = math.ceil(side / d["reduction"])
        got = m.shape[1:3]
        if CASES[case][0] in VALID_POOLING:
            assert all(expected - 1 <= g <= expected for g in got), (d, m.shape)
        else:
            assert got == (expected, expected), (d, m.shape)
        assert np.isfinite(m).all()
    # The maps are the classifier's own activations: perturb the classifier's weights after the
    # feature model was built, and read the named layers out of the classifier's graph.
    rng = np.random.default_rng(1)
    clf.set_weights([w + 0.01 * rng.standard_normal(w.shape) for w in clf.get_weights()])
    taps = keras.Model(clf.inputs[0], [clf.get_layer(d["module"]).output for d in info])
    want = [np.asarray(t) for t in taps(x, training=False)]
    got = [np.asarray(m) for m in feats(x, training=False)]
    for g, w in zip(got, want, strict=True):
        if w.ndim == 3:  # ViT tokens (B, 1 + N, D) -> the patch grid (B, H/p, W/p, D)
            w = w[:, 1:].reshape(g.shape)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


# Weight fixtures of scripts/make_weight_fixtures.py (timm nets with telling random weights).
TIMM_FIXTURES = [
    "timm_resnet18",
    "timm_vit",
    pytest.param("timm_efficientnet_b0", marks=SLOW),
    pytest.param("timm_densenet", marks=SLOW),
]


@pytest.mark.parametrize("fixture", TIMM_FIXTURES)
def test_maps_equal_timms_forward_intermediates(fixture, tmp_path, monkeypatch):
    """Loaded from a timm checkpoint, the maps are timm's own stage features on the same
    weights (``forward_intermediates``, what timm's ``features_only`` returns)."""
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import make_weight_fixtures as mwf

    try:
        f = mwf.make_fixture(fixture, tmp_path)
    except UserError as err:  # timm / torchvision do not import
        pytest.skip(str(err))
    net = f.spec.build().eval()
    net.load_state_dict(safetensors_torch.load_file(str(f.safetensors)))
    n = len(net.feature_info)
    with torch.no_grad():
        nchw = torch.from_numpy(f.x.transpose(0, 3, 1, 2).copy())
        want = net.forward_intermediates(nchw, indices=n, intermediates_only=True)
    feats = create_model(
        f.spec.model, weights=str(f.safetensors), features_only=True, out_indices=n, **f.kwargs()
    )
    assert feats.weights_report.preprocessing is not None  # the checkpoint's, kept
    got = feats(f.x, training=False)
    assert len(got) == len(want) == n
    for g, w in zip(got, want, strict=True):
        w = w.numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))


@pytest.mark.parametrize(
    "name", ["resnet18", "densenet121", "efficientnet_b0", "vgg11_bn", "vgg11", "vit_ti_16"]
)
def test_feature_info_equals_timms(name):
    case = next(c for c, (n, _, _) in CASES.items() if n == name)
    clf, _ = built(case)
    ours = FeatureModel(clf).feature_info  # the default out_indices
    theirs = timm_feature_info(name)
    keys = ("num_chs", "reduction", "index")
    assert [{k: d[k] for k in keys} for d in ours] == [{k: d[k] for k in keys} for d in theirs]


@SLOW
@pytest.mark.parametrize("name", timm_counterparts())
def test_feature_info_equals_timms_whole_zoo(name):
    small_fc = _SMALL_FC if get_entry(name).family == "vgg" else {}
    clf = create_model(name, num_classes=0, input_shape=(64, 64, 3), **small_fc)
    ours = FeatureModel(clf).feature_info
    theirs = timm_feature_info(name)
    keys = ("num_chs", "reduction", "index")
    assert [{k: d[k] for k in keys} for d in ours] == [{k: d[k] for k in keys} for d in theirs]
    keras.backend.clear_session()


def test_out_indices_like_timms():
    clf, _ = built("resnet18")
    theirs = timm_feature_info("resnet18", out_indices=(1, -1))
    feats = features_model(clf, out_indices=[-1, 1])  # any order in, stage order out (timm)
    assert feats.feature_info.channels() == [64, 512] == sorted(d["num_chs"] for d in theirs)
    assert feats.out_indices == [1, 4]
    last2 = features_model(clf, out_indices=2)  # an int: the last n stages (timm)
    assert last2.feature_info.reduction() == [16, 32]
    maps = last2(images(64, batch=1))
    assert [tuple(m.shape) for m in maps] == [(1, 4, 4, 256), (1, 2, 2, 512)]
    one = features_model(clf, out_indices=[0])
    assert one.feature_info.module_name() == ["act1"]
    single = one(images(64, batch=1))  # a list even for one map (timm)
    assert isinstance(single, list) and tuple(single[0].shape) == (1, 32, 32, 64)
    assert [a.shape for a in one.predict(images(64), verbose=0)] == [(2, 32, 32, 64)]


def test_vit_defaults_to_its_last_three_blocks():
    clf, _ = built("vit_ti_16")
    feats = features_model(clf)
    assert [d["module"] for d in feats.feature_info] == [f"encoder_layer_{i}" for i in (9, 10, 11)]
    assert features_model(clf, out_indices=[0, -1]).feature_info.module_name() == [
        "encoder_layer_0",
        "encoder_layer_11",
    ]
    two_blocks = {**TINY_VIT, "num_layers": 2}
    small = create_model("vit_ti_16", num_classes=0, input_shape=(32, 32, 3), **two_blocks)
    assert features_model(small).out_indices == [0, 1]  # fewer than three blocks: all of them


@pytest.mark.parametrize(
    "out_indices, message",
    [
        ([5], "5 is not a stage index of this model's 5 stages (valid: 0 to 4, or -5 to -1)"),
        ([-6], "-6 is not a stage index"),
        ([1, -4], "names stage 1 twice"),
        ([], "out_indices is empty"),
        (6, "asks for the last 6 stages of 5 (valid: 1 to 5)"),
        (0, "asks for the last 0 stages"),
        ("1", "must be a list of stage indices or an int"),
        ([True], "True is not a stage index"),
        ([1.0], "1.0 is not a stage index"),
    ],
)
def test_out_indices_errors(out_indices, message):
    clf, _ = built("resnet18")
    with pytest.raises(UserError) as err:
        features_model(clf, out_indices=out_indices)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("features_only (ResNet): out_indices")


def test_registry_entry_and_models_without_stages():
    feats = create_model("resnet20", features_only=True, out_indices=[-1])
    assert isinstance(feats, FeatureModel)
    assert feats.feature_info == [{"num_chs": 64, "reduction": 4, "module": "layer3_2", "index": 3}]
    with pytest.raises(UserError, match=r"MLP \('.*'\) has no stage feature maps; .* resnet, "):
        create_model("mlp", features_only=True)
    with pytest.raises(UserError, match="needs features_only=True"):
        create_model("resnet20", out_indices=[1])


# --- weights, saving, training, export ------------------------------------------------------------


@pytest.mark.parametrize("case", ["resnet20", "vit"])
def test_keras_round_trip(tmp_path, case):
    if case == "vit":
        clf = create_model("vit_ti_16", num_classes=0, input_shape=(32, 32, 3), **TINY_VIT)
        feats, x = features_model(clf, out_indices=[0, 2], name="vit_maps"), images(32)
    else:
        feats, x = built("resnet20")[1], images(32)
    feats.save(tmp_path / "f.keras")
    back = keras.saving.load_model(tmp_path / "f.keras")  # safe mode
    assert type(back) is FeatureModel and back.name == feats.name
    assert back.feature_info == feats.feature_info and back.out_indices == feats.out_indices
    assert len(back.weights) == len(feats.weights)
    for a, b in zip(feats.predict(x, verbose=0), back.predict(x, verbose=0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert back.get_config() == feats.get_config()


def test_weights_loaded_into_the_classifier_are_the_features(tmp_path):
    source = create_model("resnet20", num_classes=0)
    source.save_weights(tmp_path / "w.weights.h5")
    clf = create_model("resnet20", num_classes=0)
    feats = features_model(clf)
    clf.load_weights(tmp_path / "w.weights.h5")  # after building the feature model
    x = images(32)
    want = keras.Model(source.inputs[0], source.get_layer("layer3_2").output)(x)
    np.testing.assert_allclose(feats(x)[-1], want, rtol=1e-6, atol=1e-6)


def test_gradients_reach_every_backbone_weight():
    clf = create_model("resnet20", num_classes=0)
    feats = features_model(clf)
    x = tf.constant(images(32))
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_mean(tf.square(m)) for m in feats(x, training=True))
    grads = tape.gradient(loss, feats.trainable_weights)
    assert len(feats.trainable_weights) == len(clf.trainable_weights)  # the classifier had no head
    missing = [w.path for w, g in zip(feats.trainable_weights, grads, strict=True) if g is None]
    assert not missing
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def segmentation_head(feats: FeatureModel, num_classes: int) -> keras.Model:
    """A tiny FPN-like head: each map to 16 channels, upsampled to the finest, summed, 1x1 conv."""
    finest = min(feats.feature_info.reduction())
    maps = feats(feats.inputs[0])
    lateral = []
    for i, (m, d) in enumerate(zip(maps, feats.feature_info, strict=True)):
        m = keras.layers.Conv2D(16, 1, name=f"lateral{i}")(m)
        lateral.append(keras.layers.UpSampling2D(d["reduction"] // finest)(m))
    x = keras.layers.Add()(lateral)
    x = keras.layers.Conv2D(num_classes, 1, name="classes")(x)
    x = keras.layers.UpSampling2D(finest)(x)
    return keras.Model(feats.inputs[0], x)


def test_fit_a_segmentation_head_trains_the_backbone():
    clf = create_model("simple_cnn", num_classes=0, input_shape=(16, 16, 3), filters=[8, 16])
    feats = features_model(clf)
    model = segmentation_head(feats, num_classes=2)
    x = images(16, batch=8)
    y = (x[..., :1] > 0.5).astype("int32")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in clf.trainable_weights]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # one step moves every weight
    after = clf.trainable_weights
    assert model.predict(x, verbose=0).shape == (8, 16, 16, 2)
    assert all(not np.array_equal(b, a.numpy()) for b, a in zip(before, after, strict=True))


def test_savedmodel_export_with_several_outputs(tmp_path):
    clf = create_model("simple_cnn", num_classes=0, input_shape=(16, 16, 3), filters=[8, 16])
    feats = features_model(clf)
    feats.export(str(tmp_path / "sm"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))  # keep it: it owns the variables
    served = loaded.serve(images(16))
    want = feats.predict(images(16), verbose=0)
    assert len(served) == len(want) == 2
    for a, b in zip(served, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_onnx_and_litert_export_with_several_outputs(tmp_path, fmt):
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "ai_edge_litert")
    clf = create_model("simple_cnn", num_classes=0, input_shape=(16, 16, 3), filters=[8, 16])
    feats, x = features_model(clf), images(16)
    # Keras's ONNX exporter wants a model that has been called once ("has never called").
    want = {a.shape: a for a in feats.predict(x, verbose=0)}  # LiteRT may reorder the outputs
    path = str(tmp_path / f"f.{'onnx' if fmt == 'onnx' else 'tflite'}")
    feats.export(path, format=fmt, verbose=False)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path)
        got = session.run(None, {session.get_inputs()[0].name: x})
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        got = [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]
    assert sorted(a.shape for a in got) == sorted(want)
    for a in got:
        np.testing.assert_allclose(a, want[a.shape], rtol=1e-4, atol=1e-5)


# --- docs ---------------------------------------------------------------------------------------


@SLOW
def test_docs_table_is_generated_from_code():
    doc = (REPO / "docs" / "features.md").read_text()
    table = feature_table(
        ["resnet18", "resnet20", "wrn_28_2", "googlenet", "darts_net", "vit_ti_16"]
    )
    header, rows = table.splitlines()[:2], table.splitlines()[2:]
    assert "\n".join(header) in doc
    for row in rows:  # the whole table: python -m kerasdl.models.features (minutes, GBs)
        assert f"\n{row}\n" in doc
