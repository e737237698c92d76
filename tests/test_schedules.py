"""Learning-rate schedules of a recipe against their formulas, and ``kerasdl schedule``."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasdl.config import ScheduleConfig
from kerasdl.training.schedules import LinearWarmup, build_schedule

LR, SPE, EPOCHS = 0.1, 10, 8
TOTAL = SPE * EPOCHS


def values(cfg: ScheduleConfig) -> np.ndarray:
    s = build_schedule(cfg, LR, SPE, EPOCHS)
    return np.asarray(s(np.arange(TOTAL, dtype="float32")), dtype="float64")


def sgdr(t: float, period: float, t_mul: float, m_mul: float, lr_min: float) -> float:
    """Loshchilov & Hutter 2017, eq. 5, with period multiplier and amplitude multiplier."""
    i, start = 0, 0.0
    while t >= start + period * t_mul**i:
        start += period * t_mul**i
        i += 1
    frac = (t - start) / (period * t_mul**i)
    return lr_min + 0.5 * (LR * m_mul**i - lr_min) * (1 + math.cos(math.pi * frac))


def formula(cfg: ScheduleConfig, t: int) -> float:
    """The recipe's schedule in closed form at optimizer step ``t`` (0-based)."""
    w = int(round(cfg.warmup_epochs * SPE))
    if t < w:  # linear warm-up (Goyal et al. 2017) to the peak
        return LR * (t + 1) / w
    s, rest = t - w, TOTAL - w
    if cfg.name == "constant":
        return LR
    if cfg.name == "step":
        return LR * cfg.gamma ** sum(t >= e * SPE for e in cfg.step_epochs)
    if cfg.name == "exponential":
        return LR * cfg.decay_rate ** (s / (cfg.decay_epochs * SPE))
    lr_min = cfg.min_lr_ratio * LR
    if cfg.name == "cosine":
        return lr_min + 0.5 * (LR - lr_min) * (1 + math.cos(math.pi * s / rest))
    if cfg.name == "fixmatch_cosine":  # Sohn et al. 2020, section 4
        return LR * math.cos(7 * math.pi * s / (16 * rest))
    return sgdr(s, cfg.restart_epochs * SPE, cfg.t_mul, cfg.m_mul, lr_min)


CASES = [
    {"name": "constant"},
    {"name": "step", "step_epochs": [3, 6], "gamma": 0.2},
    {"name": "exponential", "decay_rate": 0.5, "decay_epochs": 2.0},
    {"name": "cosine"},
    {"name": "cosine", "min_lr_ratio": 0.1},
    {"name": "fixmatch_cosine"},
    {"name": "cosine_restarts", "restart_epochs": 1.0, "t_mul": 2.0, "m_mul": 0.5},
    {"name": "cosine_restarts", "restart_epochs": 2.0, "t_mul": 1.0, "min_lr_ratio": 0.05},
]


@pytest.mark.parametrize("warmup", [0.0, 1.5])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_schedule_matches_formula(case: dict, warmup: float) -> None:
    cfg = ScheduleConfig(**case, warmup_epochs=warmup)
    got = values(cfg)
    want = np.array([formula(cfg, t) for t in range(TOTAL)])
    if warmup:
        assert got[0] == pytest.approx(LR / 15, rel=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)


def test_step_decay_starts_at_the_first_step_of_the_epoch() -> None:
    # The optimizer evaluates the schedule at its iteration count before the update, so the
    # first update of epoch e uses schedule(e * SPE): it must already be decayed.
    cfg = ScheduleConfig(name="step", step_epochs=[3, 6], gamma=0.2)
    got = values(cfg)
    assert got[3 * SPE - 1] == pytest.approx(LR)
    assert got[3 * SPE] == pytest.approx(LR * 0.2)
    assert got[6 * SPE] == pytest.approx(LR * 0.04)


def test_linear_warmup_serialization_round_trip() -> None:
    cfg = ScheduleConfig(name="cosine_restarts", warmup_epochs=2, restart_epochs=1.5, m_mul=0.7)
    sched = build_schedule(cfg, LR, SPE, EPOCHS)
    assert isinstance(sched, LinearWarmup)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert isinstance(restored, LinearWarmup)
    assert restored.warmup_steps == sched.warmup_steps == 20
    steps = np.arange(TOTAL, dtype="float32")
    np.testing.assert_allclose(np.asarray(restored(steps)), np.asarray(sched(steps)), rtol=1e-7)
    # ... and inside an optimizer's config, as in a saved .keras file.
    opt = keras.optimizers.Adam(learning_rate=sched)
    again = keras.optimizers.Adam.from_config(opt.get_config())
    assert float(again.learning_rate) == pytest.approx(LR / 20)


def test_schedule_command_plots_recipe(tmp_path: Path, tiny_recipe: Path, capsys) -> None:
    from kerasdl.cli import main

    out = tmp_path / "lr.png"
    code = main(
        [
            "schedule",
            str(tiny_recipe),
            "--out",
            str(out),
            "--set",
            "training.schedule.warmup_epochs=1",
            "--set",
            "training.batch_size=100",
        ]
    )
    assert code == 0
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    # Digits: 1797 images, 20% test, 10% val of the rest -> the recipe's train split size.
    from kerasdl.config import load_recipe
    from kerasdl.data import load_data

    cfg = load_recipe(tiny_recipe)
    n = load_data(cfg.data, cfg.run.seed).sizes["train"]
    spe = math.ceil(n / 100)
    assert f"6 epochs x {spe} steps" in text
    assert f"step {spe - 1:>6}" in text  # last warm-up step, at the peak
    peak = float(text.split(f"step {spe - 1:>6}")[1].split("lr ")[1].split()[0])
    assert peak == pytest.approx(0.01, rel=1e-4)


def test_schedule_command_bad_output(tmp_path: Path, tiny_recipe: Path) -> None:
    from kerasdl.cli import main

    assert main(["schedule", str(tiny_recipe), "--out", str(tmp_path / "lr.txt")]) == 2
    assert main(["schedule", str(tiny_recipe), "--out", str(tmp_path / "no" / "lr.png")]) == 2


def test_warmup_phrase_is_singular_for_one_epoch() -> None:
    from kerasdl.commands.schedule import warmup_phrase

    assert warmup_phrase(1) == "1 warm-up epoch"
    assert warmup_phrase(2) == "2 warm-up epochs"
    assert warmup_phrase(0.5) == "0.5 warm-up epochs"
