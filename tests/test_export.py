"""SavedModel export: signatures, fresh-process reload, preprocessing parity, atomic writes, CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest_serving import (  # pytest puts tests/ on the path, as for conftest
    CLASS_NAMES,
    digits_data,
    digits_run,
    digits_uint8,
    exported,
    fresh_dir,
    keras_model,
    png_bytes,
)

from kerasdl.cli import main
from kerasdl.data.preprocess import PreprocessSpec, preprocess_images
from kerasdl.errors import UserError
from kerasdl.export import layout
from kerasdl.export.saved_model import export_saved_model

VENV_BIN = Path(sys.executable).parent


def _keras_probs(x01: np.ndarray) -> np.ndarray:
    spec = PreprocessSpec.load(digits_run() / "preprocess.json")
    logits = keras_model()(preprocess_images(x01, spec), training=False)
    return tf.nn.softmax(logits).numpy()


def test_saved_model_cli_lists_both_signatures():
    cli = VENV_BIN / "saved_model_cli"
    out = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(exported())],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "signature_def['serving_default']" in text
    assert "signature_def['serving_bytes']" in text
    assert "inputs['images']" in text and "shape: (-1, 8, 8, 1)" in text
    assert "inputs['image_bytes']" in text and "dtype: DT_STRING" in text
    for output in ("probabilities", "class_id", "class_name"):
        assert f"outputs['{output}']" in text
    assert (exported() / "assets" / "class_names.txt").read_text().split() == CLASS_NAMES


def test_fresh_process_reload_matches_keras_predictions():
    x, _ = digits_data()
    batches = {"b1": x[:1], "b7": x[10:17]}
    work = fresh_dir("reload")
    np.savez(work / "in.npz", **batches)
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(exported())!r})
        fn = loaded.signatures["serving_default"]
        data = np.load({str(work / "in.npz")!r})
        out = {{}}
        for k in data.files:
            r = fn(images=tf.constant(data[k]))
            out[k + "_p"] = r["probabilities"].numpy()
            out[k + "_id"] = r["class_id"].numpy()
            out[k + "_name"] = r["class_name"].numpy().astype(str)
        np.savez({str(work / "out.npz")!r}, **out)
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.load(work / "out.npz")
    for k, batch in batches.items():
        want = _keras_probs(batch)
        assert out[k + "_p"].shape == (len(batch), 10)
        np.testing.assert_allclose(out[k + "_p"], want, atol=1e-5)
        np.testing.assert_array_equal(out[k + "_id"], want.argmax(-1))
        assert list(out[k + "_name"]) == [CLASS_NAMES[i] for i in want.argmax(-1)]


def test_bytes_signature_preprocessing_equals_training_pipeline():
    loaded = tf.saved_model.load(str(exported()))
    images = digits_uint8(slice(20, 27))  # 7 digit images as 8x8 grayscale PNGs
    pngs = [png_bytes(im) for im in images]
    # Also a 3-channel PNG at another size: decoded to 1 channel and resized in the graph.
    big = np.kron(images[0], np.ones((3, 3), dtype="uint8"))
    pngs.append(png_bytes(big))
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant(pngs))
    spec = PreprocessSpec.load(digits_run() / "preprocess.json")
    model = keras_model()
    # The training pipeline: uint8 images through preprocess_images, then the model.
    want_small = tf.nn.softmax(model(preprocess_images(images[..., None], spec))).numpy()
    want_big = tf.nn.softmax(model(preprocess_images(big[None, ..., None], spec))).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy()[:7], want_small, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy()[7:], want_big, atol=1e-5)
    # And the float signature on the same pixels / 255 agrees with the bytes signature.
    floats = loaded.signatures["serving_default"](
        images=tf.constant(images[..., None].astype("float32") / 255.0)
    )
    np.testing.assert_allclose(
        floats["probabilities"].numpy(), out["probabilities"].numpy()[:7], atol=1e-5
    )
    # The trained model is right on most of them (the export is a real classifier).
    _, y = digits_data()
    assert (out["class_id"].numpy()[:7] == y[20:27]).mean() >= 0.7
    # A JPEG photograph (3 channels, 427x640) goes through too.
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[0]
    jpeg = tf.io.encode_jpeg(photo).numpy()
    p = loaded.signatures["serving_bytes"](image_bytes=tf.constant([jpeg]))["probabilities"]
    assert p.shape == (1, 10) and abs(float(tf.reduce_sum(p)) - 1.0) < 1e-5
    assert base64.b64encode(jpeg)  # sanity: bytes, what a client sends as {"b64": ...}


def test_failed_export_leaves_no_half_version(monkeypatch):
    import keras

    base = fresh_dir("crash")
    spec = PreprocessSpec.load(digits_run() / "preprocess.json")
    archive_cls = type(keras.export.ExportArchive())
    real_write = archive_cls.write_out

    def write_then_crash(self, filepath, *args, **kwargs):
        real_write(self, filepath, *args, **kwargs)  # a complete SavedModel in the temp folder
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(archive_cls, "write_out", write_then_crash)
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(keras_model(), spec, base, "digits")
    assert list((base / "digits").iterdir()) == []  # neither "1" nor the temporary folder
    # A temp folder left by a killed export is not a version.
    (base / "digits" / ".tmp-1-abc").mkdir()
    (base / "digits" / ".tmp-1-abc" / "saved_model.pb").write_bytes(b"half")
    assert layout.list_versions(base / "digits") == []
    assert layout.next_version(base / "digits") == 1


def test_export_cli_versions_names_and_errors(capsys):
    run = digits_run()
    out = fresh_dir("cli")
    assert main(["export", str(run), "--out", str(out)]) == 0  # name from config.yaml
    assert (out / "digits" / "1" / "saved_model.pb").is_file()
    meta = json.loads((out / "digits" / "1" / "assets.extra" / "preprocess.json").read_text())
    assert meta["image_size"] == [8, 8] and meta["class_names"] == CLASS_NAMES
    # A bare .keras file with preprocess.json beside it; the next free version.
    assert main(["export", str(run / "best.keras"), "--out", str(out), "--name", "digits"]) == 0
    assert layout.list_versions(out / "digits") == [1, 2]
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(out), "--version", "2"]) == 2
    assert "Version 2 already exists" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(out), "--name", "bad/name"]) == 2
    assert "Invalid model name" in capsys.readouterr().err
    lonely = fresh_dir("lonely")
    (lonely / "m.keras").write_bytes((run / "best.keras").read_bytes())
    assert main(["export", str(lonely / "m.keras"), "--out", str(out)]) == 2
    assert "preprocess.json" in capsys.readouterr().err
    assert main(["export", str(lonely / "missing"), "--out", str(out)]) == 2
    assert layout.list_versions(out / "digits") == [1, 2]


def test_an_exported_version_has_the_umasks_permissions() -> None:
    """A version is staged in a hidden folder and renamed; it must not stay private (0700, as
    ``tempfile.mkdtemp`` makes it) or a server running as another user cannot read it."""
    out = fresh_dir("mode")
    old = os.umask(0o022)
    try:
        assert main(["export", str(digits_run()), "--out", str(out), "--name", "digits"]) == 0
        os.umask(0o027)
        with layout.atomic_version_dir(out / "digits", 2) as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert (out / "digits" / "1").stat().st_mode & 0o777 == 0o755
    assert (out / "digits" / "2").stat().st_mode & 0o777 == 0o750


def test_versions_are_numbers_as_tf_serving_reads_them() -> None:
    """``0006`` is version 6 (for export, predict and serve alike); a half-copied newest version
    is passed over by ``kerasdl predict``."""
    base = fresh_dir("numbers") / "digits"
    for name in ("0006", "2", ".tmp-7-abc", "x1", "\u00b2", str(2**63)):
        (base / name).mkdir(parents=True)
    assert layout.list_versions(base) == [2, 6]
    assert layout.version_folders(base)[6] == base / "0006"
    assert layout.next_version(base) == 7
    with pytest.raises(UserError, match="Version 6 already exists: .*0006"):
        layout.free_version(base, 6)
    with pytest.raises(UserError, match="Version 6 already exists"):
        with layout.atomic_version_dir(base, 6):
            pass
    (base / "6").mkdir()
    assert layout.version_folders(base)[6] == base / "6"  # the one spelt as the number

    from kerasdl.export.predictor import resolve_version_dir

    model = fresh_dir("predict_half") / "digits"
    (model / "3").mkdir(parents=True)
    (model / "3" / "saved_model.pb").write_bytes(b"complete")
    (model / "0010").mkdir()  # still being copied in: no saved_model.pb yet
    assert resolve_version_dir(model) == model / "3"
    (model / "0010" / "saved_model.pb").write_bytes(b"complete")
    assert resolve_version_dir(model) == model / "0010"


def test_predict_cli_top_k_and_corrupt_image(capsys):
    work = fresh_dir("predict")
    _, y = digits_data()
    image = work / "digit.png"
    image.write_bytes(png_bytes(digits_uint8([5])[0]))
    assert main(["predict", str(exported().parent), str(image), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ")
    ranked = line.split(": ", 1)[1].split(", ")
    assert len(ranked) == 3
    probs = [float(r.split()[-1]) for r in ranked]
    assert probs == sorted(probs, reverse=True)
    want = _keras_probs(digits_data()[0][5:6])[0]
    assert ranked[0].split()[0] == CLASS_NAMES[int(want.argmax())]
    bad = work / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert main(["predict", str(exported()), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerasdl predict: error: Cannot decode image") and "\n" not in err


def test_serving_signatures_equal_the_training_data_pipeline():
    """Image files through the data pipeline (folder source -> load_data -> batch_dataset) give
    the model the same input as the same files through serving_bytes, and the pipeline's
    unstandardized images through serving_default."""
    data = pytest.importorskip("kerasdl.data")
    pipeline = pytest.importorskip("kerasdl.data.pipeline")
    config = pytest.importorskip("kerasdl.config")
    if not hasattr(data, "load_data"):
        pytest.skip("kerasdl.data.load_data not available")
    x, y = digits_data()
    root = fresh_dir("folder")
    files = {}
    for label in range(10):
        (root / str(label)).mkdir()
        for i in np.flatnonzero(y == label)[:10]:
            path = root / str(label) / f"{i}.png"
            path.write_bytes(png_bytes(digits_uint8([int(i)])[0]))
            files[path] = digits_uint8([int(i)])[0]
    cfg = config.DataConfig(
        source="folder", path=str(root), channels=1, mean=[0.3], std=[0.4], val_split=0.1
    )
    bundle = data.load_data(cfg, seed=0)
    spec = PreprocessSpec.load(digits_run() / "preprocess.json")
    assert (bundle.spec.image_size, bundle.spec.mean, bundle.spec.std) == (
        tuple(spec.image_size),
        spec.mean,
        spec.std,
    )
    loaded = tf.saved_model.load(str(exported()))
    model = keras_model()
    for split in bundle.splits.values():
        unit = np.stack([im.numpy() for im, _ in split])  # [0, 1], what serving_default takes
        batches = pipeline.batch_dataset(
            split,
            64,
            training=False,
            num_classes=10,
            standardize=pipeline.standardizer(cfg.mean, cfg.std),
        )
        fed = np.concatenate([b.numpy() for b, _ in batches])  # what the model is fed
        want = tf.nn.softmax(model(fed, training=False)).numpy()
        got = loaded.signatures["serving_default"](images=tf.constant(unit))["probabilities"]
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
        # The same images read from their files by the bytes signature.
        order = []
        for im in unit[..., 0]:
            match = [p for p, px in files.items() if np.allclose(px / 255.0, im, atol=1e-6)]
            order.append(match[0])
        blobs = tf.constant([p.read_bytes() for p in order])
        by_bytes = loaded.signatures["serving_bytes"](image_bytes=blobs)["probabilities"]
        np.testing.assert_allclose(by_bytes.numpy(), want, atol=1e-5)
