"""``kerasdl models``: the cached table, Markdown output, refresh and staleness, ``show``, and the
one-line errors for unknown names."""

from __future__ import annotations

import json

import pytest

from kerasdl.cli import main
from kerasdl.commands import models as cmd
from kerasdl.registry import list_models

KNOWN = {
    "vit_b_16": (86_567_656, 17.56),
    "vit_l_16": (304_326_632, 61.55),
    "vit_h_14": (632_045_800, 167.29),
    "efficientnet_b0": (5_288_548, 0.39),
    "efficientnet_b7": (66_347_960, None),
}


def _rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines()[2:] if line.strip()}


def test_cached_table_lists_every_model(capsys):
    assert main(["models"]) == 0
    out, err = capsys.readouterr()
    rows = _rows(out)
    assert set(rows) == set(list_models())
    for name, (params, gmacs) in KNOWN.items():
        assert rows[name][-4] == f"{params:,}"
        if gmacs:
            assert float(rows[name][-3]) == pytest.approx(gmacs, rel=0.01)
    # The committed table is current for the families of this module: nothing was rebuilt.
    assert not any(f"counting {n} " in err for n in list_models("vit_*") + list_models("eff*"))


def test_markdown_and_pattern(capsys):
    assert main(["models", "vit_*", "--markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | family | paper |")
    assert lines[1].startswith("|---|")
    assert len(lines) == 2 + len(list_models("vit_*"))
    row = next(line for line in lines if line.startswith("| vit_b_16 "))
    assert row.startswith(
        "| vit_b_16 | vit | Dosovitskiy et al. 2021 | 2021 | 86,567,656 | 17.56 |"
    )


def test_refresh_writes_where_asked_never_the_shipped_table(tmp_path, monkeypatch, capsys):
    shipped = tmp_path / "shipped.json"  # stands for the package's models_table.json
    shipped.write_text(cmd.TABLE_PATH.read_text())
    monkeypatch.setattr(cmd, "TABLE_PATH", shipped)
    before = shipped.read_bytes()
    table = tmp_path / "counts.json"
    assert main(["models", "perceptron", "--refresh", "--out", str(table)]) == 0
    out, err = capsys.readouterr()
    assert "counting perceptron" in err and "perceptron" in out
    assert shipped.read_bytes() == before  # the shipped table is read-only
    stored = json.loads(table.read_text())
    assert set(stored["models"]) == {"perceptron"}
    row = stored["models"]["perceptron"]
    assert (row["params"], row["macs"], row["classes"]) == (401, 400, 1)  # 20x20 retina
    assert main(["models", "perceptron", "--refresh"]) == 0  # no --out: printed only
    assert shipped.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.json", "shipped.json"]
    assert main(["models", "perceptron", "--out", str(tmp_path / "no" / "t.json")]) == 2
    assert "folder" in capsys.readouterr().err


def test_stale_entries_are_recounted(tmp_path, monkeypatch, capsys):
    table = tmp_path / "models_table.json"
    monkeypatch.setattr(cmd, "TABLE_PATH", table)
    import kerasdl.registry

    monkeypatch.setattr(kerasdl.registry, "list_models", lambda pattern="*": ["perceptron"])
    assert cmd.refresh_table() == table  # the developer refresh (python -m ...), on a copy
    assert "counting perceptron" in capsys.readouterr().err
    assert set(json.loads(table.read_text())["models"]) == {"perceptron"}
    monkeypatch.undo()
    monkeypatch.setattr(cmd, "TABLE_PATH", table)
    assert main(["models", "perceptron"]) == 0
    assert "counting" not in capsys.readouterr().err
    # A changed registration (signature) is detected and re-counted on the fly.
    data = json.loads(table.read_text())
    data["models"]["perceptron"]["signature"] = "old"
    table.write_text(json.dumps(data))
    assert main(["models", "perceptron"]) == 0
    err = capsys.readouterr().err
    assert "counting perceptron" in err and "python -m kerasdl.commands.models" in err


def test_show_prints_summary(capsys):
    assert main(["models", "show", "mlp", "--input-size", "4", "--num-classes", "5"]) == 0
    out = capsys.readouterr().out
    assert "dense_0" in out and "head" in out and "input 4x4x1" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["models", "show", "resnet5"], "resnet50"),
        (["models", "zzz*"], "No registered model matches 'zzz*'"),
        (["models", "show"], "usage: kerasdl models show NAME"),
        (["models", "show", "mlp", "--input-size", "1"], "--input-size must be >= 2"),
        (["models", "a*", "b*"], "at most one PATTERN"),
    ],
)
def test_user_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if argv[1:2] == ["show"] and len(argv) == 3:
        assert "Unknown model 'resnet5'. Did you mean:" in err
    assert len(err.strip().splitlines()) == 1
