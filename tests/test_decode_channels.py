"""Decoding any image format to the model's channel count (kerasdl.data.decode.decode_image).

TensorFlow's GIF decoder accepts only 3 channels (or 0), BMP 3 or 4, WebP the file's own 3 or 4:
a grayscale (1-channel) model or dataset used to fail on valid GIF, BMP and WebP files. The one
shared decoder is used by the folder source, the tf.data pipeline and the exported serving_bytes
signature; these tests check its values against PIL's, and that the folder source and an
exported grayscale model take those files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest_serving import digits_uint8, exported, png_bytes  # tests/ is on the path
from PIL import Image

from kerasdl.errors import UserError

FORMATS = {  # PIL format, keywords, file suffix
    "png": ("PNG", {}, ".png"),
    "jpeg": ("JPEG", {"quality": 95}, ".jpg"),
    "gif": ("GIF", {}, ".gif"),
    "bmp": ("BMP", {}, ".bmp"),
    "webp": ("WEBP", {"lossless": True}, ".webp"),
}


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    pil_format, kw, _ = FORMATS[fmt]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=pil_format, **kw)
    return buf.getvalue()


def _pil(data: bytes, mode: str) -> np.ndarray:
    """What PIL reads from ``data``, converted to ``mode``, as (H, W, C) (a JPEG decoded by
    libjpeg straight to ``mode``, as TensorFlow's decoder does)."""
    pil = Image.open(io.BytesIO(data))
    if pil.format == "JPEG":
        pil.draft(mode, pil.size)
    image = np.asarray(pil.convert(mode))
    return image[..., None] if image.ndim == 2 else image


def _pixels(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    # Smooth enough for JPEG to keep; random enough that a wrong conversion shows.
    base = rng.integers(0, 256, (6, 8, 3)).astype("float32")
    big = tf.image.resize(base, (18, 24), method="bilinear").numpy()
    rgb = np.clip(np.round(big), 0, 255).astype("uint8")
    if kind == "rgb":
        return rgb
    if kind == "rgba":
        alpha = rng.integers(1, 256, (18, 24, 1), dtype="uint8")  # no fully transparent pixel
        return np.concatenate([rgb, alpha], axis=-1)
    return rgb[..., 1].copy()  # gray


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("kind", ["rgb", "gray"])
def test_decode_image_to_one_and_three_channels_matches_pil(tmp_path: Path, fmt, kind) -> None:
    from kerasdl.data.decode import decode_image

    path = tmp_path / f"image{FORMATS[fmt][2]}"
    path.write_bytes(_encode(_pixels(kind), fmt))
    data = path.read_bytes()
    graph = tf.function(decode_image, reduce_retracing=True)
    for channels, mode in [(1, "L"), (3, "RGB")]:
        got = decode_image(data, channels)
        assert got.dtype == tf.uint8 and got.shape == (18, 24, channels), (fmt, kind, channels)
        got = got.numpy()
        # The same pixels inside a graph, where the serving signature and tf.data run it.
        np.testing.assert_array_equal(graph(tf.constant(data), channels).numpy(), got)
        want = _pil(data, mode)
        diff = np.abs(got.astype(int) - want.astype(int)).max()
        if fmt == "jpeg":  # TF's default is libjpeg's fast integer IDCT, PIL's the accurate one
            assert diff <= 10 and np.abs(got.astype(int) - want).mean() < 3, (kind, channels)
        else:  # gray from RGB: TF's ITU-R 601 weights vs PIL's, rounded differently
            tolerance = 0 if mode == "RGB" or kind == "gray" else 1
            assert diff <= tolerance, (fmt, kind, channels, diff)
        if fmt in ("gif", "bmp", "webp") and channels == 1:
            rgb = tf.io.decode_image(data, channels=3, expand_animations=False)
            want_tf = tf.image.rgb_to_grayscale(rgb).numpy()
            np.testing.assert_array_equal(got, want_tf)
        if fmt == "jpeg":  # JPEG and PNG: exactly their own decoder at that channel count
            np.testing.assert_array_equal(got, tf.io.decode_jpeg(data, channels=channels))
        if fmt == "png":
            np.testing.assert_array_equal(got, tf.io.decode_png(data, channels=channels))


@pytest.mark.parametrize("fmt", ["bmp", "webp"])
def test_decode_image_drops_an_alpha_channel(fmt) -> None:
    """A 32-bit BMP and a WebP with alpha: their RGB (alpha dropped), and its gray."""
    from kerasdl.data.decode import decode_image

    pixels = _pixels("rgba")
    data = _encode(pixels, fmt)
    assert tf.io.decode_image(data, expand_animations=False).shape[-1] == 4
    rgb = decode_image(data, 3).numpy()
    np.testing.assert_array_equal(rgb, pixels[..., :3])
    gray = decode_image(data, 1).numpy()
    assert gray.shape == (18, 24, 1)
    want = np.asarray(Image.fromarray(pixels[..., :3]).convert("L"))[..., None]
    assert np.abs(gray.astype(int) - want.astype(int)).max() <= 1
    np.testing.assert_array_equal(decode_image(data, 0).numpy()[..., :3], pixels[..., :3])


def test_decode_image_corrupt_data_is_an_invalid_argument_error() -> None:
    from kerasdl.data.decode import decode_image

    for bad in [b"", b"hello", b"GIF89a\x01", b"BM\x00\x00", b"RIFF\x00\x00\x00\x00WEBPVP8 "]:
        with pytest.raises(tf.errors.InvalidArgumentError):
            decode_image(bad, 1)
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.function(lambda d: decode_image(d, 1))(tf.constant(bad))


def test_folder_source_with_one_channel_keeps_gif_bmp_webp(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """``data.channels: 1``: every valid file is kept (none reported corrupt), and the pipeline
    gives each file's gray pixels."""
    from kerasdl.config import DataConfig
    from kerasdl.data import load_data
    from kerasdl.data.sources import load_folder_source

    root = tmp_path / "imgs"
    digits = digits_uint8(slice(0, 8))
    files: dict[str, np.ndarray] = {}
    for label, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True)
        for k, fmt in enumerate(["png", "gif", "bmp", "webp"]):
            pixels = digits[label * 4 + k]
            saved = np.stack([pixels] * 3, axis=-1) if fmt == "webp" else pixels
            path = root / name / f"{fmt}{FORMATS[fmt][2]}"
            path.write_bytes(_encode(saved, fmt))
            files[str(path)] = pixels
        rgb_gif = root / name / "rgb.gif"  # a colour GIF: converted to gray
        rgb_gif.write_bytes(_encode(_pixels("rgb")[:8, :8], "gif"))
        files[str(rgb_gif)] = _pil(rgb_gif.read_bytes(), "L")[..., 0]
    capfd.readouterr()
    cfg = DataConfig(source="folder", path=str(root), channels=1, val_split=0.0, test_split=0.0)
    raw = load_folder_source(cfg, seed=0)
    assert sum(raw.sizes.values()) == len(files) == 10
    assert raw.image_shape == (8, 8, 1)
    bundle = load_data(cfg, seed=0)
    assert bundle.spec.input_shape == (8, 8, 1)
    got = np.stack([x.numpy() for x, _ in bundle.splits["train"]])
    assert got.shape == (10, 8, 8, 1)
    want = np.stack(list(files.values())).astype("float32") / 255.0
    # The same images, in the split's order: match each to its file's pixels.
    for image in got[..., 0]:
        assert np.abs(want - image).max(axis=(1, 2)).min() <= 1.0 / 255 + 1e-6
    assert "skipped" not in capfd.readouterr().err


@pytest.fixture(scope="module")
def digits_images() -> np.ndarray:
    return digits_uint8(slice(30, 36))  # 6 digits, 8x8 grayscale uint8


@pytest.mark.parametrize("fmt", ["gif", "bmp", "webp"])
def test_exported_gray_model_classifies_gif_bmp_webp_as_png(fmt, digits_images) -> None:
    """The quickstart-like 8x8 grayscale export: the same pixels give the same probabilities
    whatever file format holds them, saved as gray or as RGB."""
    from kerasdl.export.predictor import Predictor

    loaded = tf.saved_model.load(str(exported()))
    serve = loaded.signatures["serving_bytes"]
    pngs = [png_bytes(im) for im in digits_images]
    as_gray = [_encode(im, fmt) for im in digits_images if fmt != "webp"]  # WebP has no gray
    as_rgb = [_encode(np.stack([im] * 3, axis=-1), fmt) for im in digits_images]
    want = serve(image_bytes=tf.constant(pngs))["probabilities"].numpy()
    for blobs in (as_gray, as_rgb):
        if not blobs:
            continue
        got = serve(image_bytes=tf.constant(blobs))["probabilities"].numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)
    predictor = Predictor(exported())
    assert predictor.channels == 1
    np.testing.assert_allclose(predictor.probabilities(as_rgb[0], "a"), want[0], atol=1e-6)
    truncated = as_rgb[0][: len(as_rgb[0]) // 2 if fmt != "bmp" else 20]
    with pytest.raises(UserError, match=r"^Cannot decode image broken: \S") as info:
        predictor.probabilities(truncated, "broken")
    assert "\n" not in str(info.value)


def test_predict_cli_on_a_gif(tmp_path: Path, capsys, digits_images) -> None:
    from kerasdl.cli import main

    image = tmp_path / "digit.gif"
    image.write_bytes(_encode(digits_images[0], "gif"))
    assert main(["predict", str(exported().parent), str(image), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")
