"""What requests see of the model repository: the read side of ``ModelRepository``.

:class:`RepositoryViews` holds the methods request threads call, each under the repository's
lock and none of them changing it: which version a request names (a version, a label or the
latest), the servable that answers it (404 and 400 as TF Serving words them), TF Serving's
``GET /v1/models/NAME`` status body, the list of every model (``GET /v1/models``), the event log
and readiness. :class:`~kerasdl.serving.repository.ModelRepository` (the manager that loads and
unloads versions, after TF Serving's ``aspired_versions_manager.cc`` and ``server_core.cc``)
inherits them.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kerasdl.serving.errors import invalid, not_found
from kerasdl.serving.version_policy import VersionState

if TYPE_CHECKING:
    from kerasdl.serving.harness import ModelRecord
    from kerasdl.serving.servable import Servable


class RepositoryViews:
    """The read-only queries of :class:`~kerasdl.serving.repository.ModelRepository`, which
    sets the attributes below."""

    base: Path | None
    config_file: Path | None
    config_error: str
    _lock: threading.Lock
    _models: dict[str, ModelRecord]
    _status: dict[str, dict[int, VersionState]]
    _events: collections.deque

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> int | None:
        """The version a request names: ``version``, the label's version, or None (latest)."""
        if label is None:
            return version
        found = self.version_for_label(name, label)
        if found is None:
            raise invalid(f"Unrecognized servable version label: {label}")
        return found

    def version_for_label(self, name: str, label: str) -> int | None:
        """The version ``label`` names for model ``name`` (None: no such label)."""
        with self._lock:
            model = self._models.get(name)
            return None if model is None else model.labels.get(label)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request: 404 (NOT_FOUND) when not served, 400 for an unknown label."""
        version = self.resolve(name, version, label)
        with self._lock:
            model = self._models.get(name)
            available = model.available if model is not None else {}
        if version is None:
            if not available:
                raise not_found(f"Servable not found for request: Latest({name})")
            return available[max(available)]
        servable = available.get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """TF Serving's ``GET /v1/models/NAME[/versions/N | /labels/L]`` body (newest first)."""
        version = self.resolve(name, version, label)
        with self._lock:
            history = dict(self._status.get(name, {}))
        if not history:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in history:
                raise not_found(f"Could not find version {version} of model {name}")
            states = [history[version]]
        else:
            states = [history[v] for v in sorted(history, reverse=True)]
        return {"model_version_status": [s.to_json() for s in states]}

    def events(self) -> list[tuple[float, str, VersionState]]:
        """Every state change so far: (wall time, model name, new state), oldest first."""
        with self._lock:
            return list(self._events)

    def summary(self) -> dict[str, Any]:
        """Every model's served versions, policy, labels and version states (``GET /v1/models``)."""
        with self._lock:
            models = {
                k: (m.spec, sorted(m.available), dict(m.labels), m.in_source)
                for k, m in self._models.items()
            }
            history = {k: dict(v) for k, v in self._status.items()}
        out: dict[str, Any] = {"models": []}
        for name in sorted(history):
            spec, available, labels, in_source = models[name]
            out["models"].append(
                {
                    "name": name,
                    "served_version": str(available[-1]) if available else None,
                    "available_versions": [str(v) for v in reversed(available)],
                    "version_policy": spec.policy.describe() if in_source else None,
                    "version_labels": {k: str(v) for k, v in sorted(labels.items())},
                    "model_version_status": [
                        history[name][v].to_json() for v in sorted(history[name], reverse=True)
                    ],
                }
            )
        if self.config_file is not None:
            out["model_config_file"] = {"path": str(self.config_file), "error": self.config_error}
        return out

    def ready(self) -> tuple[bool, str]:
        """Ready when a model is served and every model with a version on disk has one served."""
        with self._lock:
            served = {k for k, m in self._models.items() if m.available}
            wanted = {k for k, m in self._models.items() if m.wanted}
        source = self.base if self.base is not None else self.config_file
        if not served:
            return False, f"no model is loaded from {source}"
        missing = sorted(wanted - served)
        if missing:
            return False, f"models not loaded: {missing}"
        return True, f"serving {sorted(served)}"
