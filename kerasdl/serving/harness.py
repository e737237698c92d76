"""The model repository's records: one per model and one per version (TF Serving's harnesses).

:class:`~kerasdl.serving.repository.ModelRepository` owns them and changes them under its lock;
nothing else holds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kerasdl.serving.model_config import ModelSpec
from kerasdl.serving.servable import Servable
from kerasdl.serving.version_policy import END, LOADING, START


@dataclass
class Harness:
    """The manager's record of one version (TF Serving's LoaderHarness)."""

    version: int
    path: Path
    state: str = START
    aspired: bool = True
    servable: Servable | None = None
    error: str = ""
    error_code: str = "OK"
    failures: int = 0  # failed attempts in the current series
    retry_at: float | None = None  # when a failed load may be tried again
    fingerprint: tuple | None = None  # the folder's files at the last failed attempt

    def loadable(self, now: float) -> bool:
        if self.state == START:
            return True
        return self.state == LOADING and self.retry_at is not None and self.retry_at <= now

    @property
    def failed(self) -> bool:
        return bool(self.error) and self.state in (LOADING, END)


@dataclass
class ModelRecord:
    """The manager's record of one model: its spec, versions, labels and last scan."""

    spec: ModelSpec
    in_source: bool = True
    harnesses: dict[int, Harness] = field(default_factory=dict)
    available: dict[int, Servable] = field(default_factory=dict)  # replaced, never mutated
    labels: dict[str, int] = field(default_factory=dict)
    pending_labels: dict[str, int] = field(default_factory=dict)
    on_disk: dict[int, Path] = field(default_factory=dict)  # complete versions at the last scan
    wanted: bool = False  # some version is aspired (for readiness)
    missing: bool = False  # the base path was not found at the last scan
