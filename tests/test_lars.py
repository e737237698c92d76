"""LARS against MAE's ``util/lars.py`` run live in PyTorch, and through a recipe."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasdl.config import OptimizerConfig
from kerasdl.training.lars import LARS
from kerasdl.training.optimizers import build_optimizer

RNG = np.random.default_rng(0)
SHAPES = {"kernel": (3, 4), "bias": (4,), "zero_kernel": (2, 2)}
W0 = {k: RNG.normal(size=s) for k, s in SHAPES.items()}
W0["zero_kernel"][:] = 0.0  # the trust ratio falls back to 1
STEPS = [{k: RNG.normal(size=s) for k, s in SHAPES.items()} for _ in range(4)]
STEPS[2]["kernel"][:] = 0.0  # a zero update: ratio 1, momentum carries on


def _mae_lars(lr: float, wd: float, momentum: float, eta: float) -> dict[str, np.ndarray]:
    """facebookresearch/mae util/lars.py (CC BY-NC 4.0), verbatim logic, on torch tensors."""
    torch = pytest.importorskip("torch")
    params = {
        k: torch.tensor(v.copy(), dtype=torch.float64, requires_grad=True) for k, v in W0.items()
    }
    state: dict[str, torch.Tensor] = {}
    for grads in STEPS:
        with torch.no_grad():
            for k, p in params.items():
                dp = torch.tensor(grads[k], dtype=torch.float64)
                if p.ndim > 1:  # if not normalization gamma/beta or bias
                    dp = dp.add(p, alpha=wd)
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0,
                        torch.where(update_norm > 0, (eta * param_norm / update_norm), one),
                        one,
                    )
                    dp = dp.mul(q)
                if k not in state:
                    state[k] = torch.zeros_like(p)
                mu = state[k]
                mu.mul_(momentum).add_(dp)
                p.add_(mu, alpha=-lr)
    return {k: p.detach().numpy() for k, p in params.items()}


def _keras(opt: keras.optimizers.Optimizer) -> dict[str, np.ndarray]:
    variables = {k: keras.Variable(v.copy(), dtype="float64", name=k) for k, v in W0.items()}
    for grads in STEPS:
        opt.apply_gradients(
            [(keras.ops.convert_to_tensor(grads[k], "float64"), variables[k]) for k in SHAPES]
        )
    return {k: np.asarray(v.numpy()) for k, v in variables.items()}


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_lars_matches_maes_implementation(wd: float) -> None:
    want = _mae_lars(lr=0.3, wd=wd, momentum=0.9, eta=0.001)
    got = _keras(LARS(learning_rate=0.3, momentum=0.9, weight_decay=wd))
    for k in SHAPES:
        np.testing.assert_allclose(
            got[k], want[k], rtol=1e-7, atol=1e-9, err_msg=k
        )  # Keras keeps lr in float32
    assert not np.allclose(got["kernel"], W0["kernel"])


def test_lars_from_a_recipe_and_its_config_round_trip() -> None:
    cfg = OptimizerConfig(name="lars", learning_rate=0.3, weight_decay=0.05, trust_coefficient=0.01)
    opt = build_optimizer(cfg, 0.3)
    assert isinstance(opt, LARS) and opt.momentum == 0.9 and opt.trust_coefficient == 0.01
    got = _keras(opt)
    np.testing.assert_allclose(
        got["bias"], _mae_lars(lr=0.3, wd=0.05, momentum=0.9, eta=0.01)["bias"], rtol=1e-7
    )
    clone = LARS.from_config(opt.get_config())
    assert (clone.momentum, clone.lars_weight_decay, clone.trust_coefficient) == (0.9, 0.05, 0.01)
    assert clone.weight_decay is None  # no Keras decoupled decay on top


def test_lars_refuses_decay_exclude_with_a_clear_message() -> None:
    from kerasdl.errors import UserError

    with pytest.raises((UserError, ValueError), match="LARS already leaves biases and norms"):
        OptimizerConfig(name="lars", decay_exclude=["bias"])


def test_a_model_trains_with_lars() -> None:
    x = RNG.normal(size=(64, 5)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    model.compile(LARS(learning_rate=0.05, trust_coefficient=0.2), "mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.5 * first


def test_lars_refuses_a_backbone_learning_rate_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="backbone_lr_multiplier: not available with LARS"):
        OptimizerConfig(name="lars", backbone_lr_multiplier=0.1)
