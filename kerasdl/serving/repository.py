"""The model repository: which model versions are served, and changing them without downtime.

It follows TF Serving's design (``aspired_versions_manager.cc``, ``basic_manager.cc``,
``file_system_storage_path_source.cc``, ``server_core.cc``):

* **Source.** Every model folder under a base folder (``<base>/<model>/<integer version>/``), or
  the models of a ``--model-config-file`` (:mod:`kerasdl.serving.model_config`). A background
  thread polls the folders (and the config file). A version folder counts once it holds
  ``saved_model.pb``; other folders (an export's ``.tmp-*``) are ignored.
* **Aspired versions.** Each model's :class:`~kerasdl.serving.version_policy.VersionPolicy`
  (default ``latest 1``) picks the versions to serve. A version that was unloaded and is aspired
  again (its successor was deleted: a rollback) is loaded again.
* **Availability-preserving changes.** :func:`~kerasdl.serving.version_policy.next_action` loads
  the new aspired version (and warms it up) *before* unloading the old one; requests in flight
  finish on the version they started on. A deleted version folder keeps serving from memory until
  its replacement is available.
* **Retries.** A failed load (say a version seen half-copied) is retried ``max_load_retries``
  times, ``load_retry_interval`` seconds apart (TF Serving's ``max_num_load_retries`` and
  ``load_retry_interval_micros``), and again whenever the folder's files change; meanwhile the
  status shows ``LOADING`` with the error, then ``END`` with it.
* **Status.** Every transition (``START``, ``LOADING``, ``AVAILABLE``, ``UNLOADING``, ``END``) is
  recorded for ``GET /v1/models/NAME`` and in :meth:`ModelRepository.events`.
* **Version labels** (config file only): ``/labels/stable`` resolves to a version. A label moved
  to a version that is not loaded yet keeps pointing to its old version (which stays loaded)
  until the new one is available, so label requests never fail during the move.

What requests read (version resolution, the servable lookup, status, summary, readiness) is
:class:`~kerasdl.serving.repository_views.RepositoryViews`, which this class inherits.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path

from kerasdl.export.layout import version_number
from kerasdl.serving import heap
from kerasdl.serving.harness import Harness, ModelRecord
from kerasdl.serving.model_config import ModelConfigError, ModelSpec, load_model_config
from kerasdl.serving.repository_views import RepositoryViews
from kerasdl.serving.servable import Servable, load_error_code
from kerasdl.serving.storage import complete_versions, fingerprint
from kerasdl.serving.version_policy import (
    AVAILABLE,
    END,
    LOADING,
    START,
    UNLOADING,
    VersionPolicy,
    VersionSnapshot,
    VersionState,
    next_action,
)

log = logging.getLogger("kerasdl.serving")


class ModelRepository(RepositoryViews):
    """Loads, serves and changes model versions without dropping requests.

    Args:
        base: the model base folder (``saved_models``), or one model's folder (its children are
            integer versions), which is then served under the folder's name. None with
            ``model_config_file``.
        poll_interval: seconds between scans of the version folders; 0 scans only at start.
        model_config_file: a TF Serving ``ModelServerConfig`` text file (instead of ``base``).
        config_poll_interval: seconds between re-reads of ``model_config_file`` (0: never).
        max_load_retries: retries of a failed load before the version is left in ``END``.
        load_retry_interval: seconds between those retries.
        allow_unsafe_ops: load versions whose graphs can touch files, processes or the network
            (:mod:`kerasdl.serving.safety`); by default they are refused (``END`` with
            PERMISSION_DENIED, tried again only when their files change).
        freeze_heap: after each pass that loads or unloads a version, collect garbage once and
            exempt the loaded models' objects from later collections (:mod:`kerasdl.serving.heap`;
            ``kerasdl serve`` turns it on; off by default, as it acts on the whole process).

    Raises:
        ModelConfigError: ``model_config_file`` cannot be read or is invalid.

    Example:
        >>> repo = ModelRepository("saved_models", poll_interval=2.0)
        >>> repo.start()
        >>> repo.get("digits").signature("serving_default")
        >>> repo.get("digits", label="stable")
    """

    def __init__(
        self,
        base: str | Path | None = None,
        poll_interval: float = 2.0,
        *,
        model_config_file: str | Path | None = None,
        config_poll_interval: float = 0.0,
        max_load_retries: int = 5,
        load_retry_interval: float = 2.0,
        allow_unsafe_ops: bool = False,
        freeze_heap: bool = False,
    ) -> None:
        if (base is None) == (model_config_file is None):
            raise ValueError("Give exactly one of base and model_config_file.")
        self.base = Path(base) if base is not None else None
        self.config_file = Path(model_config_file) if model_config_file is not None else None
        self.poll_interval = poll_interval
        self.config_poll_interval = config_poll_interval
        self.max_load_retries = max_load_retries
        self.load_retry_interval = load_retry_interval
        self.allow_unsafe_ops = allow_unsafe_ops
        self.freeze_heap = freeze_heap
        self._heap_held = False
        self._lock = threading.Lock()  # guards what request threads read
        self._manage_lock = threading.RLock()  # one manager pass at a time
        self._models: dict[str, ModelRecord] = {}
        self._status: dict[str, dict[int, VersionState]] = {}
        self._events: collections.deque = collections.deque(maxlen=10_000)
        self._config_specs: dict[str, ModelSpec] | None = None
        self._config_text: str | None = None
        self.config_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.config_file is not None:
            self._read_config(initial=True)

    # --- the source: model folders or the config file -------------------------------------

    def model_dirs(self) -> dict[str, Path]:
        """Model name -> folder, for every model folder under the base (or in the config)."""
        if self._config_specs is not None:
            return {name: spec.base_path for name, spec in self._config_specs.items()}
        assert self.base is not None
        try:
            children = [p for p in self.base.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            return {}
        if children and all(version_number(p.name) is not None for p in children):
            return {self.base.resolve().name: self.base}
        return {p.name: p for p in children if version_number(p.name) is None}

    def _specs(self) -> dict[str, ModelSpec]:
        if self._config_specs is not None:
            return dict(self._config_specs)
        return {name: ModelSpec(name, path) for name, path in self.model_dirs().items()}

    def _read_config(self, initial: bool = False) -> None:
        assert self.config_file is not None
        try:
            text = self.config_file.read_text()
        except OSError as err:
            text, error = None, f"Cannot read model config file {self.config_file}: {err}"
        else:
            error = ""
        if text is not None and text == self._config_text:
            return
        try:
            if text is None:
                raise ModelConfigError(error)
            specs = {s.name: s for s in load_model_config(self.config_file)}
        except ModelConfigError as err:
            if initial:
                raise
            if str(err) != self.config_error:
                log.error("model config not reloaded (the previous one stays): %s", err)
            self.config_error = str(err)
            return
        if not initial:
            log.info("model config reloaded: %s", sorted(specs))
        self._config_text, self._config_specs, self.config_error = text, specs, ""

    def replace_models(self, specs: list[ModelSpec]) -> None:
        """Serve ``specs`` instead of the current models (a ``ReloadConfigRequest``), as a
        changed ``--model-config-file`` would, and run one manager pass now."""
        with self._manage_lock:
            self._config_specs = {s.name: s for s in specs}
            self.config_error = ""
        log.info("model config replaced: %s", sorted(s.name for s in specs))
        self.poll_once()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load every model now (one attempt each), then manage versions in a background thread."""
        if self.freeze_heap and not self._heap_held:
            heap.acquire()
            self._heap_held = True
        self.poll_once()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="model-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (loaded models stay usable for requests in flight)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._heap_held:
            self._heap_held = False
            heap.release()

    def _loop(self) -> None:
        now = time.monotonic()
        next_scan = now + self.poll_interval if self.poll_interval > 0 else float("inf")
        next_config = (
            now + self.config_poll_interval
            if self.config_file is not None and self.config_poll_interval > 0
            else float("inf")
        )
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_config:
                    next_config = now + self.config_poll_interval
                    with self._manage_lock:
                        self._read_config()
                    next_scan = now  # apply the config at once
                if now >= next_scan:
                    next_scan = now + self.poll_interval if self.poll_interval > 0 else float("inf")
                    self.poll_once()
                else:
                    self._manage()
            except Exception:  # noqa: BLE001 - the manager must outlive any surprise
                log.exception("model manager pass failed")
            wake = min(next_scan, next_config, self._next_retry(), time.monotonic() + 1.0)
            self._stop.wait(max(0.0, wake - time.monotonic()))

    def _next_retry(self) -> float:
        with self._lock:
            times = [
                h.retry_at
                for m in self._models.values()
                for h in m.harnesses.values()
                if h.state == LOADING and h.retry_at is not None
            ]
        return min(times, default=float("inf"))

    # --- the manager -----------------------------------------------------------------------

    def poll_once(self) -> None:
        """Scan the sources once, then load and unload versions until nothing is due."""
        with self._manage_lock:
            self._scan()
            self._manage()

    def _scan(self) -> None:
        specs = self._specs()
        for name in set(self._models) | set(specs):
            model = self._models.get(name)
            spec = specs.get(name)
            if model is None:
                with self._lock:
                    model = self._models[name] = ModelRecord(spec)  # type: ignore[arg-type]
            if spec is None:
                model.in_source = False
                self._set_aspired(model, set())
                continue
            model.in_source = True
            if spec != model.spec:
                model.spec = spec
            self._update_labels(model, spec)
            on_disk = complete_versions(spec.base_path)
            if on_disk is None:
                if self._config_specs is not None:  # as TF Serving: nothing changes meanwhile
                    if not model.missing:
                        log.warning("model %s: base path %s not found", name, spec.base_path)
                    model.missing = True
                    continue
                on_disk = {}
            model.missing = False
            model.on_disk = on_disk
            self._retry_changed(model)
            self._reaspire(model)

    def _reaspire(self, model: ModelRecord) -> None:
        failed = {v for v, h in model.harnesses.items() if h.failed}
        self._set_aspired(model, model.spec.policy.aspired(model.on_disk, failed))

    def _retry_changed(self, model: ModelRecord) -> None:
        """A failed version whose files changed since its last attempt is tried again now."""
        for h in model.harnesses.values():
            if not h.failed or h.version not in model.on_disk or not h.aspired:
                continue
            if fingerprint(h.path) != h.fingerprint:
                log.info(
                    "model %s version %d changed on disk: loading again", model.spec.name, h.version
                )
                if h.state == END:
                    h.failures = 0
                    self._record(model, h, LOADING, h.error, h.error_code)
                h.retry_at = time.monotonic()

    def _set_aspired(self, model: ModelRecord, aspired: set[int]) -> None:
        name = model.spec.name
        for version, h in list(model.harnesses.items()):
            if version in aspired:
                h.aspired = True
                continue
            h.aspired = False
            if h.state in (START, LOADING):  # not wanted any more: cancel the (re)try
                self._record(model, h, END, h.error, h.error_code)
            if h.state == END:
                del model.harnesses[version]  # gone from the manager, kept in the status
        for version in sorted(aspired - set(model.harnesses)):
            h = Harness(version, model.on_disk.get(version, model.spec.base_path / str(version)))
            model.harnesses[version] = h
            self._record(model, h, START)
            log.info(
                "model %s version %d aspired (%s)", name, version, model.spec.policy.describe()
            )
        with self._lock:
            model.wanted = model.in_source and bool(aspired)

    def _manage(self) -> None:
        changed = False
        with self._manage_lock:
            for model in list(self._models.values()):
                while True:
                    now = time.monotonic()
                    held = set(model.labels[k] for k in model.pending_labels if k in model.labels)
                    snaps = [
                        VersionSnapshot(v, h.state, h.aspired or v in held, h.loadable(now))
                        for v, h in model.harnesses.items()
                    ]
                    action = next_action(snaps)
                    if action is None:
                        break
                    kind, version = action
                    changed = True
                    if kind == "load":
                        self._load(model, model.harnesses[version])
                    else:
                        self._unload(model, model.harnesses[version])
            if changed and self._heap_held:
                log.debug("heap settled in %.2f s", heap.settle())

    def _load(self, model: ModelRecord, h: Harness) -> None:
        name = model.spec.name
        self._record(model, h, LOADING, h.error, h.error_code)
        started = time.monotonic()
        files = fingerprint(h.path)  # before the attempt: a change during it is seen later
        try:
            servable = Servable(name, h.version, h.path, allow_unsafe_ops=self.allow_unsafe_ops)
        except Exception as err:  # noqa: BLE001 - a broken version must not stop the server
            message = f"{type(err).__name__}: {err}".splitlines()[0][:500]
            h.failures += 1
            h.fingerprint = files
            code = load_error_code(err)
            if h.failures <= self.max_load_retries and getattr(err, "retryable", True):
                h.retry_at = time.monotonic() + self.load_retry_interval
                log.warning(
                    "model %s version %d failed to load (attempt %d of %d, retrying in %g s): %s",
                    name, h.version, h.failures, self.max_load_retries + 1,
                    self.load_retry_interval, message,
                )  # fmt: skip
                self._record(model, h, LOADING, message, code)
            else:
                h.retry_at = None
                log.error(
                    "model %s version %d failed to load after %d attempts: %s",
                    name, h.version, h.failures, message,
                )  # fmt: skip
                self._record(model, h, END, message, code)
            if model.in_source:
                self._reaspire(model)  # latest N: the next lower version stands in meanwhile
            return
        h.servable, h.failures, h.retry_at, h.fingerprint = servable, 0, None, None
        with self._lock:
            model.available = {**model.available, h.version: servable}
            for label, version in list(model.pending_labels.items()):
                if version == h.version:
                    model.labels[label] = version
                    del model.pending_labels[label]
                    log.info("model %s label %s -> version %d", name, label, version)
        self._record(model, h, AVAILABLE)
        if model.in_source:
            self._reaspire(model)  # a stand-in for this version is no longer needed
        log.info(
            "serving model %s version %d (loaded in %.2f s)",
            name,
            h.version,
            time.monotonic() - started,
        )

    def _unload(self, model: ModelRecord, h: Harness) -> None:
        self._record(model, h, UNLOADING)
        with self._lock:
            model.available = {v: s for v, s in model.available.items() if v != h.version}
        h.servable = None  # requests in flight hold their own reference
        self._record(model, h, END)
        if not h.aspired:
            model.harnesses.pop(h.version, None)
        log.info("unloaded model %s version %d", model.spec.name, h.version)

    def _update_labels(self, model: ModelRecord, spec: ModelSpec) -> None:
        with self._lock:
            for label in set(model.labels) - set(spec.labels):
                del model.labels[label]
            for label, version in spec.labels.items():
                old = model.labels.get(label)
                if old is None or old == version or version in model.available:
                    model.labels[label] = version
                    model.pending_labels.pop(label, None)
                elif model.pending_labels.get(label) != version:
                    model.pending_labels[label] = version  # moves once the version is loaded
                    log.info(
                        "model %s label %s moves to version %d once it is loaded",
                        spec.name,
                        label,
                        version,
                    )
            for label in set(model.pending_labels) - set(spec.labels):
                del model.pending_labels[label]

    def _record(
        self, model: ModelRecord, h: Harness, state: str, error: str = "", code: str = "OK"
    ) -> None:
        h.state, h.error, h.error_code = state, error, code if error else "OK"
        entry = VersionState(h.version, state, error, h.error_code)
        with self._lock:
            self._status.setdefault(model.spec.name, {})[h.version] = entry
            self._events.append((time.time(), model.spec.name, entry))


__all__ = ["ModelRepository", "ModelSpec", "VersionPolicy", "VersionState"]
