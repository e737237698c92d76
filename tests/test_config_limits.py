"""Recipe values out of their limits stop ``kerasdl train`` with one line naming the key and exit
status 2, before anything is written: per-channel mean/std, std > 0, finite numbers, the seed's
range, the split sizes, a recipe file that is not text, and run names that are one folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_recipe

from kerasdl.cli import main
from kerasdl.config import Section, load_recipe, read_yaml
from kerasdl.config import schema as schema_module
from kerasdl.errors import UserError

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def _train(recipe: Path, overrides: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """``kerasdl train recipe --set ...`` in-process: the exit status and the last stderr line
    (stderr must be that one line, no traceback)."""
    args = ["train", str(recipe)]
    for o in overrides:
        args += ["--set", o]
    code = main(args)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1, err  # one line, no traceback
    return code, err[0]


def _assert_refused(tmp_path: Path, overrides: list[str], needle: str, capsys) -> str:
    """Train the tiny recipe (``runs/`` under ``tmp_path``) with ``overrides``: exit 2, one error
    line holding ``needle``, and no run folder."""
    recipe = write_recipe(tmp_path / "tiny.yaml", tmp_path / "runs")
    code, line = _train(recipe, ["training.epochs=1", *overrides], capsys)
    assert code == 2, line
    assert line.startswith("kerasdl train: error:") and needle in line, line
    assert not (tmp_path / "runs").exists()
    return line


# --- 1, 2: data.mean / data.std -----------------------------------------------------------------


def test_mean_and_std_need_one_value_per_channel(tmp_path: Path, capsys) -> None:
    line = _assert_refused(
        tmp_path,
        ["data.mean=[0.5,0.5,0.5]", "data.std=[1,1,1]"],  # the tiny recipe has data.channels: 1
        "data.mean and data.std need one value per channel (or one for all): 3 given for 1 channel",
        capsys,
    )
    assert "data.channels 1" in line
    digits = QUICKSTART
    with pytest.raises(UserError, match=r"3 given for 1 channel \(data.source 'digits'\)"):
        load_recipe(digits, ["data.channels=null", "data.mean=[0.5,0.5,0.5]", "data.std=[1,1,1]"])
    with pytest.raises(UserError, match=r"2 given for 3 channels \(data.source 'synthetic'\)"):
        load_recipe(
            digits,
            [
                "data.source=synthetic",
                "data.channels=null",
                "data.mean=[0.5,0.5]",
                "data.std=[1,1]",
            ],
        )
    # one value stands for every channel (it broadcasts, in training and in the export)
    load_recipe(digits, ["data.channels=3", "data.mean=[0.5]", "data.std=[0.25]"])
    # what is right is still accepted; unknown channels (files read later) are not checked here
    load_recipe(digits, ["data.mean=[0.5]", "data.std=[0.25]"])
    load_recipe(digits, ["data.channels=3", "data.mean=[0.5,0.5,0.5]", "data.std=[1,1,1]"])
    load_recipe(digits, ["data.source=npz", "data.path=x.npz", "data.mean=[0.5]", "data.std=[1]"])


@pytest.mark.parametrize("std", ["[0]", "[-0.5]", "[0.0]"])
def test_std_must_be_positive(tmp_path: Path, std: str, capsys) -> None:
    _assert_refused(
        tmp_path,
        ["data.mean=[0.5]", f"data.std={std}"],
        "data.std[0]: Input should be greater than 0.",
        capsys,
    )


# --- 3: finite numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "received"),
    [
        ("training.optimizer.learning_rate=.inf", "training.optimizer.learning_rate", "inf"),
        ("training.l2=.inf", "training.l2", "inf"),
        ("training.l1=.nan", "training.l1", "nan"),
        ("training.optimizer.weight_decay=.inf", "training.optimizer.weight_decay", "inf"),
        ("training.optimizer.clipnorm=.inf", "training.optimizer.clipnorm", "inf"),
        ("training.schedule.warmup_epochs=.inf", "training.schedule.warmup_epochs", "inf"),
        ("data.mean=[.nan]", "data.mean[0]", "nan"),
        ("model.dropout=.inf", "model.dropout", "inf"),
    ],
)
def test_infinite_and_nan_numbers_are_refused(
    tmp_path: Path, override: str, key: str, received: str, capsys
) -> None:
    overrides = [override] + (["data.std=[1]"] if override.startswith("data.mean") else [])
    line = _assert_refused(tmp_path, overrides, f"{key}: Input should be a finite number.", capsys)
    assert f"Received: {received}" in line


def test_every_recipe_section_refuses_inf_and_nan() -> None:
    sections = [
        cls
        for cls in vars(schema_module).values()
        if isinstance(cls, type) and issubclass(cls, Section)
    ]
    assert len(sections) > 10
    for cls in sections:
        assert cls.model_config.get("allow_inf_nan") is False, cls.__name__
    with pytest.raises(UserError, match=r"^method\.lambda_u: Input should be a finite number"):
        load_recipe(QUICKSTART, ["method.name=fixmatch", "method.lambda_u=.inf"])


# --- 4: run.seed --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "needle"),
    [
        ("-1", "run.seed: Input should be greater than or equal to 0. Received: -1"),
        (str(2**32), f"run.seed: Input should be less than or equal to {2**32 - 1}."),
    ],
)
def test_seed_is_in_numpys_range(tmp_path: Path, seed: str, needle: str, capsys) -> None:
    _assert_refused(tmp_path, [f"run.seed={seed}"], needle, capsys)
    assert load_recipe(QUICKSTART, [f"run.seed={2**32 - 1}"]).run.seed == 2**32 - 1


# --- 5: split sizes -----------------------------------------------------------------------------


def test_splits_leaving_no_training_images_are_one_line(tmp_path: Path, capsys) -> None:
    _assert_refused(
        tmp_path,
        ["data.val_split=0.1", "data.test_split=0.8999"],
        "data.val_split 0.1, data.test_split 0.8999: training would keep 0 of the 1797 images",
        capsys,
    )


@pytest.mark.parametrize(
    ("val", "test", "advice"),
    [
        (0.001, 0.2, "raise data.val_split"),  # the val split is too small: raise it
        (0.1, 0.001, "raise data.test_split"),
        (0.1, 0.8999, "lower data.val_split or data.test_split"),  # nothing left to train on
        (0.0, 0.995, "lower data.test_split"),
    ],
)
def test_split_advice_goes_the_right_way(val: float, test: float, advice: str) -> None:
    from sklearn.datasets import load_digits

    from kerasdl.data.raw import stratified_split

    with pytest.raises(UserError) as info:
        stratified_split(load_digits().target, val, test, seed=0)
    message = str(info.value)
    assert advice in message and "\n" not in message
    assert ("raise" in advice) != ("lower" in message)


def test_split_sizes_are_checked_as_scikit_learn_computes_them() -> None:
    from kerasdl.data.raw import stratified_split

    labels = np.arange(20) % 10  # 10 classes of 2: one split (test) needs 10 images (0.5)
    parts = stratified_split(labels, 0.0, 0.5, seed=2**32 - 1)  # the largest seed splits too
    assert sorted(len(v) for v in parts.values()) == [10, 10]
    with pytest.raises(UserError, match=r"data.test_split 0.55: training would keep 9 of the 20"):
        stratified_split(labels, 0.0, 0.55, seed=0)


# --- 6: a recipe file that is not text ----------------------------------------------------------


def test_recipe_that_is_not_utf8_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00bin")
    code, line = _train(path, [], capsys)
    assert code == 2 and line.startswith("kerasdl train: error:")
    assert f"{path}: not a YAML text file (not UTF-8" in line
    assert list(tmp_path.iterdir()) == [path]
    bom = tmp_path / "bom.yaml"  # a UTF-8 byte-order mark is still read
    bom.write_bytes("\ufeffrun:\n  name: caf\u00e9-free\n".encode())
    assert read_yaml(bom) == {"run": {"name": "caf\u00e9-free"}}


# --- 7: run.name and run.id ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("run.name=../../x", "run.name: Invalid run name '../../x'"),
        ("run.name=", "run.name: Invalid run name ''"),
        ("run.name=a/b", "run.name: Invalid run name 'a/b'"),
        ("run.name=..", "run.name: Invalid run name '..'"),
        ("run.id=../y", "run.id: Invalid run id '../y'"),
    ],
)
def test_run_name_is_one_folder(tmp_path: Path, override: str, shown: str, capsys) -> None:
    out = tmp_path / "a" / "b" / "runs"
    recipe = write_recipe(tmp_path / "tiny.yaml", out)
    code, line = _train(recipe, ["training.epochs=1", override], capsys)
    assert code == 2 and shown in line, line
    assert "use letters, digits, '_', '.' and '-'" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "x").exists()
    for name in ("quickstart", "cifar10_resnet20", "dropout_0.5", "trial-0001"):
        assert load_recipe(QUICKSTART, [f"run.name={name}"]).run.name == name


# --- a key given twice, a folder for a recipe ---------------------------------------------------


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    recipe = tmp_path / "dup.yaml"
    recipe.write_text("training:\n  epochs: 1\n  batch_size: 8\n  epochs: 2\n")
    with pytest.raises(
        UserError, match=r"line 4, column 3: key 'epochs' given twice \(first at line 2\)"
    ):
        read_yaml(recipe)
    # the same key in two sections, and YAML merge keys, are not repeats
    recipe.write_text(
        "base: &b {epochs: 1}\ntraining:\n  <<: *b\n  batch_size: 8\nrun: {seed: 1}\n"
        "model: {seed: 2}\n"
    )
    data = read_yaml(recipe)
    assert data["training"] == {"epochs": 1, "batch_size": 8}


def test_a_folder_given_as_the_recipe(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path)]) == 2
    assert "is a folder; expected a recipe file (.yaml)" in capsys.readouterr().err


def test_mean_of_the_wrong_length_for_a_folder_fails_when_the_channels_are_known(
    tmp_path: Path, capsys
) -> None:
    """A folder's channels are known once its files are read: the same one line there, before
    the run folder is made (it was a Keras traceback mid-run, leaving a half run folder)."""
    from tiny_models import write_image_folder

    write_image_folder(tmp_path / "imgs", 6, (8, 8))  # RGB files
    (tmp_path / "imgs" / "dog" / "broken.jpg").unlink()  # (its warning is another line)
    overrides = [
        "data.source=folder",
        f"data.path={tmp_path / 'imgs'}",
        "data.channels=null",
        "data.val_split=0",
        "data.test_split=0",
        "data.mean=[0.5,0.5]",
        "data.std=[1,1]",
    ]
    line = _assert_refused(tmp_path, overrides, "2 given for the 3 channel(s)", capsys)
    assert "folder data" in line


def test_method_seed_is_in_numpys_range() -> None:
    from kerasdl.methods.params import validate_method

    with pytest.raises(UserError, match="method.seed: Input should be greater than or equal to 0"):
        validate_method({"name": "fixmatch", "seed": -1})
    assert validate_method({"name": "fixmatch", "seed": 2**32 - 1}).seed == 2**32 - 1
