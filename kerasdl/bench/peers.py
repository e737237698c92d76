"""Benchmark peers: ``keras.applications`` models and PyTorch CPU references of one architecture.

``keras.applications`` peers are built with ``weights=None`` and logits outputs
(``classifier_activation=None``), so they train with the same loss as kerasdl's models. PyTorch
peers (the optional ``torch`` extra) are :mod:`kerasdl.bench.torch_models` (torchvision's own
models; the CIFAR ResNets and the DARTS network hand-written), in the channels-last memory
format, trained with SGD + momentum and cross-entropy; mixed precision is
``torch.autocast("cpu", dtype=...)`` around the forward pass (PyTorch's CPU mixed-precision
recipe), inference runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from kerasdl.bench.case import Case, peak_rss_mb, rss_mb, throughput

# registry name -> keras.applications constructor name
KERAS_APPLICATIONS = {
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
    "vgg16": "VGG16",
    "vgg19": "VGG19",
    "densenet121": "DenseNet121",
    "densenet169": "DenseNet169",
    "densenet201": "DenseNet201",
    "efficientnet_b0": "EfficientNetB0",
    "efficientnet_b1": "EfficientNetB1",
}


def has_keras_application(name: str) -> bool:
    return name in KERAS_APPLICATIONS


def has_torch_peer(name: str) -> bool:
    """True when PyTorch is installed and a reference of ``name`` exists."""
    if importlib.util.find_spec("torch") is None:
        return False
    from kerasdl.bench.torch_models import TORCH_MODELS

    return name in TORCH_MODELS


def keras_application(name: str, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """``keras.applications`` model of registry name ``name`` (random weights, logits)."""
    import keras

    ctor = getattr(keras.applications, KERAS_APPLICATIONS[name])
    return ctor(
        weights=None,
        input_shape=input_shape,
        classes=num_classes,
        classifier_activation=None,
    )


class TorchSteps:
    """The PyTorch reference of ``case.model``, ready to time: ``train(n)`` and ``infer(n)``
    run ``n`` steps and return their seconds; ``info`` holds parameters, versions and memory."""

    def __init__(self, case: Case) -> None:
        import torch

        from kerasdl.bench.torch_models import build_torch_model

        torch.manual_seed(0)
        if case.threads and case.threads[1]:
            torch.set_num_threads(case.threads[1])
        base_rss = rss_mb()
        model = build_torch_model(case.model, case.num_classes, case.channels, case.input_size)
        self.model = model.to(memory_format=torch.channels_last)
        self.dtype = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(
            case.precision
        )
        x = torch.randn(case.batch_size, case.channels, case.input_size, case.input_size)
        self.x = x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, case.num_classes, (case.batch_size,))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.info: dict[str, Any] = {
            "params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "rss_before_model_mb": base_rss,
        }

    def _autocast(self) -> Any:
        import torch

        return torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype is not None)

    def train(self, n: int) -> float:
        """``n`` SGD steps (cross-entropy on the logits, in float32 as autocast's recipe)."""
        import torch.nn.functional as F

        self.model.train()
        t0 = time.perf_counter()
        for _ in range(n):
            self.opt.zero_grad(set_to_none=True)
            with self._autocast():
                out = self.model(self.x)
            loss = F.cross_entropy(out.float(), self.y)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0

    def infer(self, n: int) -> float:
        """``n`` forward passes under ``torch.inference_mode``."""
        import torch

        self.model.eval()
        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            for _ in range(n):
                self.model(self.x)
        return time.perf_counter() - t0


def run_torch_case(case: Case) -> dict[str, Any]:
    """Training and inference images/s of the PyTorch reference of ``case.model``."""
    steps = TorchSteps(case)
    result: dict[str, Any] = dict(steps.info)
    if "train" in case.modes:
        steps.train(case.warmup)
        times = [steps.train(case.steps) for _ in range(case.repeats)]
        result["train"] = throughput(times, case.steps * case.batch_size)
        result["train_peak_rss_mb"] = peak_rss_mb()
    if "infer" in case.modes:
        steps.infer(max(case.warmup, 1))
        times = [steps.infer(case.steps) for _ in range(case.repeats)]
        result["infer"] = throughput(times, case.steps * case.batch_size)
    return result
