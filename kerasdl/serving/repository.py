"""The model repository: every model under a base folder, each at its highest loadable version.

Layout (TF Serving's): ``<base>/<model>/<integer version>/saved_model.pb``. A background thread
polls the folder; a new version is loaded and warmed up *beside* the one being served and swapped
in with one reference assignment, so requests never wait and in-flight requests finish on the
version they started with. A version that fails to load is logged, reported by the status
endpoint (state ``END`` with its error) and not retried; the previous version keeps serving.
Folders whose name is not an integer (e.g. an export's ``.tmp-*``) are ignored.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasdl.serving.errors import not_found
from kerasdl.serving.servable import Servable

log = logging.getLogger("kerasdl.serving")


@dataclass
class VersionState:
    """One version's TF Serving state (``START``, ``LOADING``, ``AVAILABLE``, ``END``)."""

    version: int
    state: str
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {
                "error_code": "UNKNOWN" if self.error else "OK",
                "error_message": self.error,
            },
        }


def _complete_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    out = []
    for p in model_dir.iterdir():
        if p.is_dir() and p.name.isdigit():
            if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
                out.append(int(p.name))
    return sorted(out)


class ModelRepository:
    """Loads, serves and hot-swaps the models under ``base``.

    Args:
        base: the model base folder (``saved_models``), or one model's folder (its children are
            integer versions), which is then served under the folder's name.
        poll_interval: seconds between scans for new versions; 0 scans only at start.

    Example:
        >>> repo = ModelRepository("saved_models", poll_interval=2.0)
        >>> repo.start()
        >>> repo.get("digits").signature("serving_default")
    """

    def __init__(self, base: str | Path, poll_interval: float = 2.0) -> None:
        self.base = Path(base)
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._served: dict[str, Servable] = {}
        self._history: dict[str, dict[int, VersionState]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def model_dirs(self) -> dict[str, Path]:
        """Model name -> folder, for every model folder under the base."""
        if not self.base.is_dir():
            return {}
        children = [p for p in self.base.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if children and all(p.name.isdigit() for p in children):
            return {self.base.resolve().name: self.base}
        return {p.name: p for p in children if not p.name.isdigit()}

    def start(self) -> None:
        """Load every model now, then keep polling in a background thread."""
        self.poll_once()
        if self.poll_interval > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="model-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling (loaded models stay usable for requests in flight)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must outlive any surprise
                log.exception("model poll failed")

    def poll_once(self) -> None:
        """Scan the base folder once, loading new versions and unloading removed ones."""
        dirs = self.model_dirs()
        for name, model_dir in sorted(dirs.items()):
            self._update_model(name, model_dir)
        for name in set(self._served) - set(dirs):
            self._unload(name, "model folder removed")

    def _update_model(self, name: str, model_dir: Path) -> None:
        versions = _complete_versions(model_dir)
        with self._lock:
            history = self._history.setdefault(name, {})
        current = self._served.get(name)
        if current is not None and current.version not in versions:
            self._unload(name, "version folder removed")
            current = None
        floor = current.version if current is not None else 0
        for version in reversed(versions):
            if version <= floor:
                break
            if version in history and history[version].state == "END":
                continue  # failed before: reported, not retried
            with self._lock:
                history[version] = VersionState(version, "LOADING")
            try:
                servable = Servable(name, version, model_dir / str(version))
            except Exception as err:  # noqa: BLE001 - a broken version must not stop the server
                message = f"{type(err).__name__}: {err}".splitlines()[0][:500]
                log.error("model %s version %d failed to load: %s", name, version, message)
                with self._lock:
                    history[version] = VersionState(version, "END", message)
                continue
            with self._lock:
                old = self._served.get(name)
                self._served[name] = servable
                history[version] = VersionState(version, "AVAILABLE")
                if old is not None:
                    history[old.version] = VersionState(old.version, "END")
            log.info("serving model %s version %d", name, version)
            break

    def _unload(self, name: str, reason: str) -> None:
        with self._lock:
            old = self._served.pop(name, None)
            if old is not None:
                self._history.setdefault(name, {})[old.version] = VersionState(old.version, "END")
        if old is not None:
            log.info("unloaded model %s version %d (%s)", name, old.version, reason)

    def get(self, name: str, version: int | None = None) -> Servable:
        """The servable for a request; 404 (NOT_FOUND) when the model or version is not served."""
        with self._lock:
            servable = self._served.get(name)
        if version is None:
            if servable is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            return servable
        if servable is None or servable.version != version:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def status(self, name: str, version: int | None = None) -> dict[str, Any]:
        """TF Serving's ``GET /v1/models/NAME[/versions/N]`` body (newest version first)."""
        with self._lock:
            history = dict(self._history.get(name, {}))
        if not history:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in history:
                raise not_found(f"Could not find version {version} of model {name}")
            states = [history[version]]
        else:
            states = [history[v] for v in sorted(history, reverse=True)]
        return {"model_version_status": [s.to_json() for s in states]}

    def summary(self) -> dict[str, Any]:
        """Every model's served version and every version's state (for ``GET /v1/models``)."""
        with self._lock:
            served = {k: v.version for k, v in self._served.items()}
            history = {k: dict(v) for k, v in self._history.items()}
        return {
            "models": [
                {
                    "name": name,
                    "served_version": str(served[name]) if name in served else None,
                    "model_version_status": [
                        history[name][v].to_json() for v in sorted(history[name], reverse=True)
                    ],
                }
                for name in sorted(history)
            ]
        }

    def ready(self) -> tuple[bool, str]:
        """Ready when at least one model is served and every model folder has a served version."""
        with self._lock:
            served = set(self._served)
        names = set(self.model_dirs())
        if not served:
            return False, f"no model is loaded from {self.base}"
        missing = sorted(n for n in names - served if _complete_versions(self.model_dirs()[n]))
        if missing:
            return False, f"models not loaded: {missing}"
        return True, f"serving {sorted(served)}"
