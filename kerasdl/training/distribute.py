"""Distribution strategies for a recipe's ``distribute`` section.

* ``none``: TensorFlow's default strategy (one device).
* ``mirrored``: ``tf.distribute.MirroredStrategy`` over all local GPUs, the listed ``devices``, or,
  with ``logical_cpus: N`` on a CPU-only machine, N logical CPU devices (for trying data
  parallelism without a GPU). Synchronous data parallelism with all-reduce.
* ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``;
  without ``TF_CONFIG``, the cluster of a Kubernetes Indexed Job (``JOB_COMPLETION_INDEX`` and
  ``KERASDL_WORKER_HOSTS``, see :mod:`kerasdl.cluster.env`) becomes this process's ``TF_CONFIG``.

The recipe's ``training.batch_size`` is the **global** batch: each of R replicas gets
``batch_size / R`` examples per step. ``training.lr_scaling`` optionally rescales the learning rate
when the global batch differs from the batch the learning rate was tuned for (linear rule, Goyal et
al. 2017; square-root rule, Krizhevsky 2014).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from kerasdl.cluster.env import HOSTS_ENV, INDEX_ENV, tf_config_from_env
from kerasdl.errors import UserError


@dataclass
class DistributionInfo:
    """What the run records about its distribution."""

    strategy: str
    replicas: int
    global_batch: int
    per_replica_batch: int
    lr_rule: str
    lr_factor: float
    workers: int
    task: dict[str, Any]

    @property
    def is_chief(self) -> bool:
        t = self.task
        if not t:
            return True
        return t.get("type") == "chief" or (t.get("type") == "worker" and t.get("index") == 0)

    def describe(self) -> str:
        return (
            f"distribution: {self.strategy}, {self.replicas} replica(s) on {self.workers} "
            f"worker(s); global batch {self.global_batch} = {self.per_replica_batch} per replica; "
            f"learning-rate scaling {self.lr_rule} (x{self.lr_factor:g})"
        )


def configure_logical_cpus(n: int) -> None:
    """Split the CPU into ``n`` logical devices; must run before TensorFlow initializes devices."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != n:
            raise UserError(
                f"distribute.logical_cpus: TensorFlow already initialized {existing} CPU "
                f"device(s); cannot make {n} now (set it before anything else runs)"
            ) from None


def tf_config_task() -> tuple[dict[str, Any], int]:
    """The ``TF_CONFIG`` task of this process and the number of workers in the cluster."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}, 1
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UserError(f"TF_CONFIG is not valid JSON: {err}") from None
    cluster = conf.get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    return conf.get("task", {}), max(workers, 1)


def _default(devices: list[str] | None, logical_cpus: int) -> tf.distribute.Strategy:
    return tf.distribute.get_strategy()


def _mirrored(devices: list[str] | None, logical_cpus: int) -> tf.distribute.Strategy:
    if not devices and logical_cpus and not tf.config.list_physical_devices("GPU"):
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices or None)


def _multi_worker(devices: list[str] | None, logical_cpus: int) -> tf.distribute.Strategy:
    if not os.environ.get("TF_CONFIG"):
        conf = tf_config_from_env(os.environ)
        if conf is None:
            raise UserError(
                f"distribute.strategy multi_worker needs TF_CONFIG (the cluster and this task), "
                f"or {INDEX_ENV} and {HOSTS_ENV} (as in the pods of kerasdl cluster kubernetes); "
                "see the README section 'Several machines' and docs/cluster.md"
            )
        # TensorFlow's cluster resolver and tf_config_task read it from here
        os.environ["TF_CONFIG"] = json.dumps(conf)
    return tf.distribute.MultiWorkerMirroredStrategy()


# name -> builder(devices, logical_cpus)
STRATEGIES: dict[str, Callable[..., tf.distribute.Strategy]] = {
    "none": _default,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
}


def make_strategy(
    name: str, devices: list[str] | None = None, logical_cpus: int = 0
) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for a recipe's ``distribute.strategy``."""
    if logical_cpus:
        configure_logical_cpus(logical_cpus)
    if name not in STRATEGIES:
        raise UserError(
            f"Unknown distribute.strategy {name!r}. Expected one of: {', '.join(STRATEGIES)}."
        )
    return STRATEGIES[name](devices, logical_cpus)


# rule -> learning-rate multiplier for the ratio of the global batch to the tuned batch
LR_RULES: dict[str, Callable[[float], float]] = {
    "none": lambda ratio: 1.0,
    "linear": lambda ratio: ratio,  # Goyal et al. 2017
    "sqrt": lambda ratio: ratio**0.5,  # Krizhevsky 2014
}


def lr_factor(rule: str, global_batch: int, base_batch: int | None) -> float:
    """Learning-rate multiplier of a scaling rule for a global batch versus the tuned batch."""
    return LR_RULES[rule](global_batch / base_batch) if base_batch else 1.0


def describe_distribution(
    strategy: tf.distribute.Strategy,
    name: str,
    global_batch: int,
    rule: str,
    base_batch: int | None,
) -> DistributionInfo:
    """Replica count, per-replica batch and the learning-rate rule of a strategy."""
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise UserError(
            f"training.batch_size {global_batch} is the global batch and must be divisible by "
            f"the {replicas} replicas"
        )
    task, workers = tf_config_task()
    return DistributionInfo(
        strategy=name,
        replicas=replicas,
        global_batch=global_batch,
        per_replica_batch=global_batch // replicas,
        lr_rule=rule,
        lr_factor=lr_factor(rule, global_batch, base_batch),
        workers=workers,
        task=task,
    )
