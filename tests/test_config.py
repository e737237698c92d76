"""Recipe validation, overrides and the CLI's one-line user errors (exit 2, no run folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from kerasdl.cli import main
from kerasdl.config import QUICKSTART, apply_override, load_recipe, one_line, validate_recipe
from kerasdl.errors import UserError


def test_quickstart_recipe_is_valid_and_headed_by_its_claims() -> None:
    cfg = load_recipe(None)
    assert cfg.model.name == "simple_cnn" and cfg.data.source == "digits"
    head = QUICKSTART.read_text().splitlines()[:4]
    assert any("Command:" in line for line in head)
    assert any("Expected:" in line and "0.97" in line for line in head)


def test_overrides_are_typed_and_nested(tiny_recipe: Path) -> None:
    cfg = load_recipe(
        tiny_recipe, ["training.epochs=3", "training.optimizer.name=sgd", "model.filters=[4, 8]"]
    )
    assert cfg.training.epochs == 3
    assert cfg.training.optimizer.name == "sgd"
    assert cfg.model.kwargs()["filters"] == [4, 8]


def test_resolved_config_round_trips(tiny_recipe: Path, tmp_path: Path) -> None:
    cfg = load_recipe(tiny_recipe, ["training.batch_size=32"])
    out = tmp_path / "resolved.yaml"
    cfg.dump_yaml(out)
    again = load_recipe(out)
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"trainig": {}}, "Unknown key 'trainig'. Expected one of: model, data, training, run"),
        ({"training": {"epochz": 1}}, "Unknown key 'training.epochz'. Expected one of: epochs"),
        ({"training": {"epochs": "ten"}}, "training.epochs: Input should be a valid integer"),
        ({"training": {"epochs": 0}}, "training.epochs: Input should be greater than 0"),
        ({"training": {"optimizer": {"name": "adm"}}}, "'sgd', 'momentum', 'nesterov'"),
        ({"model": {"name": "resnet9000"}}, "Unknown model 'resnet9000'. Expected one of:"),
        ({"model": {"name": "simple_cnn", "width": 3}}, "model.width: not an argument"),
        ({"data": {"source": "imagenet"}}, "data.source: Input should be 'digits'"),
        ({"data": {"source": "tfds"}}, "needs data.name"),
        ({"data": {"val_split": 0.5, "test_split": 0.5}}, "must be below 1"),
        # a section that may be absent still lists its keys
        ({"model": {"init": {"name": "he_normal", "x": 1}}}, "Expected one of: name, mode."),
        # list items by index, union members named together, no pydantic type tags in keys
        ({"training": {"metrics": ["top1"]}}, "training.metrics[0]: Input should be 'accuracy'"),
        (
            {"training": {"steps_per_execution": "x"}},
            "training.steps_per_execution: Input should be a valid integer or 'auto'. Received",
        ),
        ({"data": {"image_size": -1}}, "data.image_size: Input should be a valid list or greater"),
        # a validator's message that does not name its key is given it
        (
            {"data": {"image_size": [1, 2, 3]}},
            "data.image_size: Expected an int or [height, width]",
        ),
    ],
)
def test_validation_messages(raw: dict, needle: str) -> None:
    with pytest.raises(UserError) as info:
        validate_recipe(raw)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: float = 0.5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"sise": 1},
            "Unknown key 'data.augment[2].sise' for augmentation 'cutout'. Expected one of: size.",
        ),
        (
            {"size": "big"},
            "data.augment[2].size: Input should be a valid number, unable to parse "
            "string as a number. Received: 'big'",
        ),
    ],
)
def test_one_line_names_the_key_under_where(raw: dict, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        _Op.model_validate(raw)
    assert one_line(info.value, "data.augment[2]", model=_Op, owner="augmentation 'cutout'") == (
        expected
    )
    assert one_line(info.value).startswith(("Unknown key 'sise'.", "size: Input should be"))


def test_search_recipe_errors_share_the_formatter(tmp_path: Path) -> None:
    from kerasdl.nas.config import load_search_recipe

    path = tmp_path / "search.yaml"
    path.write_text("search: {layers: 2, nodez: 3}\n")
    with pytest.raises(UserError, match=r"Unknown key 'search.nodez'. Expected one of: layers, "):
        load_search_recipe(path)
    path.write_text("search: {nodes: 2, multiplier: 3}\n")
    with pytest.raises(UserError) as info:
        load_search_recipe(path)
    assert str(info.value) == "search.multiplier must be at most search.nodes (2)."


def test_bad_override_syntax() -> None:
    with pytest.raises(UserError, match="expected key.sub=value"):
        apply_override({}, "training.epochs")


def _run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["training.epochz=3"], "Unknown key 'training.epochz'"),
        (["training.epochs=abc"], "training.epochs: Input should be a valid integer"),
        (["model.name=nope"], "Unknown model 'nope'. Expected one of:"),
        (["data.source=tfds", "data.name=no_such_dataset"], "unknown tensorflow-datasets name"),
        (["data.source=folder", "data.path=/no/such/dir"], "folder not found"),
        (["data.source=npz", "data.path=/no/such.npz"], "npz file not found"),
        (["training.monitor=val_acc"], "training.monitor: 'val_acc' is not logged"),
    ],
)
def test_cli_user_errors_exit_2_without_run_folder(
    tiny_recipe: Path, overrides: list[str], needle: str, capsys: pytest.CaptureFixture
) -> None:
    args = ["train", str(tiny_recipe)]
    for o in overrides:
        args += ["--set", o]
    code, line = _run_cli(args, capsys)
    assert code == 2
    assert line.startswith("kerasdl train: error:") and needle in line
    assert not (tiny_recipe.parent / "runs").exists()


def test_cli_missing_recipe_and_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, line = _run_cli(["train", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "Recipe file not found" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    code, line = _run_cli(["train", str(bad)], capsys)
    assert code == 2 and "not valid YAML" in line
    code, line = _run_cli(["evaluate", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "not found" in line


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--set" in capsys.readouterr().out


def test_yaml_written_by_users_may_use_ints_for_floats(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"training": {"optimizer": {"learning_rate": 1}}}))
    assert load_recipe(path).training.optimizer.learning_rate == 1.0


def test_learning_rate_scaling_rules() -> None:
    from kerasdl.training.distribute import lr_factor

    assert lr_factor("none", 512, 256) == 1.0
    assert lr_factor("linear", 512, 256) == 2.0
    assert lr_factor("sqrt", 1024, 256) == 2.0
    assert lr_factor("linear", 512, None) == 1.0  # no tuned batch given: nothing to rescale
