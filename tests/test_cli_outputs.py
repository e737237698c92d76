"""Output paths and option values a user gets wrong: one line on stderr, exit status 2, before
the command's work, and nothing written (these were tracebacks with status 1, or useless runs)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kerasdl.cli import main


def _error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_an_output_file_that_is_a_folder(
    tmp_path: Path, tiny_recipe: Path, trained_run, capsys
) -> None:
    folder = tmp_path / "taken.png"
    folder.mkdir()
    assert main(["models", "mlp", "--out", str(folder)]) == 2
    assert "is a folder; expected a file name" in _error(capsys)
    assert main(["schedule", str(tiny_recipe), "--out", str(folder)]) == 2
    assert "is a folder" in _error(capsys)
    # probe checks before it loads the model and trains its probes
    assert main(["probe", str(trained_run.run_dir), "--out", str(folder)]) == 2
    assert "is a folder" in _error(capsys)
    assert list(folder.iterdir()) == []


def test_an_output_folder_that_is_a_file(tmp_path: Path, trained_run, capsys) -> None:
    afile = tmp_path / "img.png"
    afile.write_bytes(b"not a folder")
    assert main(["export", str(trained_run.run_dir), "--out", str(afile)]) == 2
    assert "is a file; expected a folder" in _error(capsys)
    assert main(["experiment", "perceptron_xor", "--quick", "--out", str(afile / "sub")]) == 2
    assert f"is under {afile}, which is a file" in _error(capsys)
    assert afile.read_bytes() == b"not a folder"


def test_run_output_dir_that_is_a_file_fails_before_the_model_is_built(
    tmp_path: Path, capsys
) -> None:
    from conftest import write_recipe

    afile = tmp_path / "runs"
    afile.write_text("x")
    recipe = write_recipe(tmp_path / "r.yaml", afile)
    assert main(["train", str(recipe), "--quiet"]) == 2
    err = _error(capsys)
    assert "run.output_dir" in err and "is a file" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "runs"]


def test_atomic_write_onto_a_folder_is_a_user_error(tmp_path: Path) -> None:
    from kerasdl.errors import UserError
    from kerasdl.io import write_text

    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match="it is a folder"):
        write_text(tmp_path / "d", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary file left


def test_evaluate_batch_size_and_input_shape(trained_run, capsys) -> None:
    run = str(trained_run.run_dir)
    for bad in ("-3", "0"):
        assert main(["evaluate", run, "--batch-size", bad]) == 2
        assert "--batch-size must be >= 1" in _error(capsys)
    assert main(["evaluate", run, "--set", "data.image_size=16"]) == 2
    err = _error(capsys)
    assert "the model takes 8x8x1 images but the data gives 16x16x1" in err, err
    image = trained_run.run_dir.parent / "one.png"
    image.write_bytes(b"\x89PNG")
    assert main(["evaluate", run, "--data", str(image)]) == 2
    assert "expected a folder of images (a subfolder per class) or an .npz file" in _error(capsys)
    assert main(["evaluate", run, "--batch-size", "32"]) == 0


def test_probe_values(trained_run, capsys) -> None:
    run = str(trained_run.run_dir)
    for epochs in ("0", "-2"):
        assert main(["probe", run, "--protocol", "finetune", "--finetune-epochs", epochs]) == 2
        assert "--finetune-epochs must be >= 1" in _error(capsys)
    assert main(["probe", run, "--protocol", "knn", "--seed", "-1"]) == 2
    assert "--seed must be an integer from 0" in _error(capsys)
    assert not (trained_run.run_dir / "probe.json").exists()


def test_schedule_shows_the_learning_rate_train_uses_with_lr_scaling(
    tmp_path: Path, tiny_recipe: Path, capsys
) -> None:
    """``training.lr_scaling`` multiplies the peak, in the plot and printout as in training."""
    out = tmp_path / "lr.png"
    scaling = "training.lr_scaling={rule: linear, base_batch_size: 256}"
    assert main(["schedule", str(tiny_recipe), "--out", str(out), "--set", scaling]) == 0
    text = capsys.readouterr().out
    first = float(text.split("step      0")[1].split("lr ")[1].split()[0])
    assert first == pytest.approx(0.01 * 64 / 256, rel=1e-5)  # cosine starts at its peak
    from kerasdl.training.distribute import lr_factor

    assert lr_factor("linear", 64, 256) == 0.25 and not math.isclose(first, 0.01)
