"""The environment contract between the cluster manifests and ``kerasdl train`` (no TensorFlow).

A Kubernetes Indexed Job gives every pod its index in ``JOB_COMPLETION_INDEX`` (set by the Job
controller) and a stable DNS name ``<job>-<index>.<service>`` through a headless Service; the
manifests :mod:`kerasdl.cluster.kubernetes` writes add ``KERASDL_WORKER_HOSTS``, the ``host:port``
of every worker in index order. From the two, :func:`tf_config_from_env` builds the ``TF_CONFIG``
that ``tf.distribute.MultiWorkerMirroredStrategy`` reads, so a pod needs no start-up script::

    JOB_COMPLETION_INDEX=1
    KERASDL_WORKER_HOSTS=train-0.train:2222,train-1.train:2222
    -> TF_CONFIG={"cluster": {"worker": ["train-0.train:2222", "train-1.train:2222"]},
                  "task": {"type": "worker", "index": 1}}

Worker 0 is the chief (it writes the run folder). References: Kubernetes, "Job with Pod-to-Pod
Communication" and "Indexed Job for Parallel Processing" (kubernetes.io/docs/tasks/job/);
TensorFlow, "Multi-worker training with Keras" (the ``TF_CONFIG`` format).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kerasdl.errors import UserError

INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in every pod of an Indexed Job
HOSTS_ENV = "KERASDL_WORKER_HOSTS"  # written into the manifest: host:port,host:port,...
WORKER_PORT = 2222  # the port the workers' gRPC servers listen on (TensorFlow's usual one)


def worker_hosts(job: str, service: str, workers: int, port: int = WORKER_PORT) -> list[str]:
    """The ``host:port`` of every pod of an Indexed Job behind a headless Service, in index
    order: ``<job>-<index>.<service>:<port>``."""
    return [f"{job}-{i}.{service}:{port}" for i in range(workers)]


def parse_hosts(raw: str) -> list[str]:
    """``"a:1,b:2"`` -> ``["a:1", "b:2"]``, each checked to be ``host:port`` (UserError if not)."""
    hosts = [h.strip() for h in raw.split(",")]
    for host in hosts:
        name, sep, port = host.rpartition(":")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(
                f"{HOSTS_ENV}: {host!r} is not host:port (a name and a port 1-65535). "
                f"Received: {raw!r}"
            )
    duplicates = sorted({h for h in hosts if hosts.count(h) > 1})
    if duplicates:
        raise UserError(f"{HOSTS_ENV}: {', '.join(duplicates)} listed twice. Received: {raw!r}")
    return hosts


def tf_config_from_env(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``TF_CONFIG`` of this worker from ``JOB_COMPLETION_INDEX`` and
    ``KERASDL_WORKER_HOSTS``, or None when neither is set.

    Raises:
        UserError: one of the two is missing, the host list is malformed, or the index is not
            an integer in ``[0, number of hosts)``.
    """
    raw_index, raw_hosts = environ.get(INDEX_ENV), environ.get(HOSTS_ENV)
    if raw_index is None and raw_hosts is None:
        return None
    if raw_hosts is None or not raw_hosts.strip():
        raise UserError(
            f"{INDEX_ENV} is set but {HOSTS_ENV} is not: set it to the host:port of every "
            "worker, comma-separated, in index order (kerasdl cluster kubernetes writes it)"
        )
    if raw_index is None:
        raise UserError(
            f"{HOSTS_ENV} is set but {INDEX_ENV} is not: set it to this worker's index "
            "(0 for the chief; an Indexed Job sets it in every pod)"
        )
    hosts = parse_hosts(raw_hosts)
    index = raw_index.strip()
    if not index.isdigit() or int(index) >= len(hosts):
        raise UserError(
            f"{INDEX_ENV}: expected an integer from 0 to {len(hosts) - 1} (one per host in "
            f"{HOSTS_ENV}). Received: {raw_index!r}"
        )
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": int(index)}}
