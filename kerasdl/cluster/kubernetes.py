"""Kubernetes manifests for a multi-worker ``kerasdl train`` run (no TensorFlow, no Kubernetes
client: plain YAML for ``kubectl apply -f DIR/``).

Four objects, each in its own file under DIR::

    configmap.yaml  the resolved recipe (distribute.strategy multi_worker, run.output_dir /runs)
    service.yaml    a headless Service (clusterIP: None) that gives the pods stable DNS names
    pvc.yaml        a ReadWriteMany volume for the shared run folder, mounted at /runs
    job.yaml        an Indexed Job: completionMode Indexed, parallelism = completions = workers

Every pod runs ``kerasdl train /etc/kerasdl/recipe.yaml``; Kubernetes sets
``JOB_COMPLETION_INDEX`` in it and the manifest sets ``KERASDL_WORKER_HOSTS`` (every worker's
``<job>-<index>.<service>:2222``), from which :mod:`kerasdl.training.distribute` builds
``TF_CONFIG`` (:mod:`kerasdl.cluster.env`). Worker 0 is the chief and writes the run folder; the
other workers read its backups when the run resumes, hence the shared volume. A pod that fails is
restarted in place (``restartPolicy: OnFailure``) and the run resumes from its last backup.

References: Kubernetes, "Job with Pod-to-Pod Communication" (Indexed Job + headless Service +
``subdomain``) and "Indexed Job for Parallel Processing with Static Work Assignment"
(``JOB_COMPLETION_INDEX``), kubernetes.io/docs/tasks/job/; the run folder and resume semantics
are the README's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kerasdl.cluster.env import HOSTS_ENV, WORKER_PORT, worker_hosts
from kerasdl.config import RecipeConfig, validate_recipe
from kerasdl.errors import UserError
from kerasdl.io import write_text

RECIPE_DIR = "/etc/kerasdl"  # where the ConfigMap is mounted
RUNS_DIR = "/runs"  # where the shared volume is mounted (the recipe's run.output_dir)
MANIFEST_FILES = ("configmap.yaml", "service.yaml", "pvc.yaml", "job.yaml")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class ClusterSpec:
    """What the manifests are made of.

    Args:
        name: the Job's name, also the Service's (a DNS label); the ConfigMap is
            ``<name>-recipe`` and the volume claim ``<name>-runs``.
        workers: worker pods (one replica group each).
        image: the container image (built from ``Dockerfile`` or ``Dockerfile.gpu``).
        gpus_per_worker: ``nvidia.com/gpu`` limit of each pod (0: CPU only).
        volume_size: the run-folder volume's requested size.
        storage_class: its storage class (None: the cluster's default; it must offer
            ReadWriteMany, e.g. NFS, CephFS, EFS, Filestore).
    """

    name: str
    workers: int
    image: str
    gpus_per_worker: int = 0
    volume_size: str = "10Gi"
    storage_class: str | None = None


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings (the recipe in the ConfigMap) as literal blocks."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def job_name(run_name: str) -> str:
    """A DNS-label name for the Job from a recipe's ``run.name`` (``My_Run`` -> ``my-run``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", run_name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"kerasdl-{name}".rstrip("-")
    return name[:50].rstrip("-")


def check_spec(spec: ClusterSpec) -> None:
    """Raise UserError for a name Kubernetes would reject or a worker count below 1."""
    if not _DNS_LABEL.match(spec.name) or len(spec.name) > 50:
        raise UserError(
            f"--name: {spec.name!r} must be a DNS label of at most 50 characters (lower-case "
            "letters, digits and '-', starting with a letter); pods are named <name>-<index>"
        )
    if spec.workers < 1:
        raise UserError(f"--workers: expected at least 1. Received: {spec.workers}")
    if spec.gpus_per_worker < 0:
        raise UserError(f"--gpus-per-worker: expected 0 or more. Received: {spec.gpus_per_worker}")
    if not spec.image.strip():
        raise UserError("--image: expected a container image, e.g. registry.example/kerasdl:0.1")


def cluster_recipe(cfg: RecipeConfig, spec: ClusterSpec) -> RecipeConfig:
    """The recipe every pod trains: multi-worker, writing to the shared volume; checked.

    Raises:
        UserError: the global batch does not split over the workers' replicas, or the recipe
            is invalid under ``multi_worker``.
    """
    data = cfg.to_dict()
    data["distribute"]["strategy"] = "multi_worker"
    data["run"]["output_dir"] = RUNS_DIR
    out = validate_recipe(data)
    replicas = spec.workers * max(spec.gpus_per_worker, 1)
    if out.training.batch_size % replicas:
        raise UserError(
            f"training.batch_size {out.training.batch_size} is the global batch and must be "
            f"divisible by the {replicas} replicas ({spec.workers} worker(s) x "
            f"{max(spec.gpus_per_worker, 1)} device(s))"
        )
    return out


def manifests(cfg: RecipeConfig, spec: ClusterSpec) -> dict[str, dict[str, Any]]:
    """The four manifests as ``{file name: object}`` (see the module docstring)."""
    check_spec(spec)
    recipe = cluster_recipe(cfg, spec)
    name, recipe_map, claim = spec.name, f"{spec.name}-recipe", f"{spec.name}-runs"
    labels = {"app.kubernetes.io/name": "kerasdl", "app.kubernetes.io/instance": name}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": recipe_map, "labels": dict(labels)},
        "data": {"recipe.yaml": yaml.safe_dump(recipe.to_dict(), sort_keys=False)},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "clusterIP": "None",  # headless: DNS names for the pods, no load balancing
            # names resolve before the pods are ready: the workers dial each other at start-up
            "publishNotReadyAddresses": True,
            "selector": {"job-name": name},  # the label Kubernetes puts on a Job's pods
            "ports": [{"name": "grpc", "port": WORKER_PORT, "targetPort": WORKER_PORT}],
        },
    }
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": spec.volume_size}},
    }
    if spec.storage_class:
        pvc_spec["storageClassName"] = spec.storage_class
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "labels": dict(labels)},
        "spec": pvc_spec,
    }
    container: dict[str, Any] = {
        "name": "kerasdl",
        "image": spec.image,
        "command": ["kerasdl", "train", f"{RECIPE_DIR}/recipe.yaml", "--quiet"],
        "env": [
            # JOB_COMPLETION_INDEX is set by the Job controller in every pod
            {"name": HOSTS_ENV, "value": ",".join(worker_hosts(name, name, spec.workers))},
            {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"},
        ],
        "ports": [{"name": "grpc", "containerPort": WORKER_PORT}],
        "volumeMounts": [
            {"name": "recipe", "mountPath": RECIPE_DIR, "readOnly": True},
            {"name": "runs", "mountPath": RUNS_DIR},
        ],
    }
    if spec.gpus_per_worker:
        container["resources"] = {"limits": {"nvidia.com/gpu": spec.gpus_per_worker}}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.workers,
            "parallelism": spec.workers,
            "backoffLimit": 6 * spec.workers,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "subdomain": name,  # the headless Service: <name>-<index>.<name> resolves
                    "restartPolicy": "OnFailure",  # restarted in place; the run resumes
                    # the images' user; fsGroup makes the run-folder volume writable for it
                    "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
                    "containers": [container],
                    "volumes": [
                        {"name": "recipe", "configMap": {"name": recipe_map}},
                        {"name": "runs", "persistentVolumeClaim": {"claimName": claim}},
                    ],
                },
            },
        },
    }
    return {
        "configmap.yaml": configmap,
        "service.yaml": service,
        "pvc.yaml": pvc,
        "job.yaml": job,
    }


def write_manifests(cfg: RecipeConfig, spec: ClusterSpec, out: str | Path) -> list[Path]:
    """Check everything, then write the manifests into ``out`` (each file atomically).

    Returns:
        The files written.
    """
    objects = manifests(cfg, spec)  # every check first: nothing is written on an error
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = spec.gpus_per_worker > 0
    header = (
        f"# kerasdl cluster kubernetes: {spec.workers} worker(s) of image {spec.image}\n"
        f"# (built with: docker build -f {'Dockerfile.gpu' if gpu else 'Dockerfile'} "
        f"-t {spec.image} .); apply with: kubectl apply -f {out}/\n"
    )
    paths = []
    for file, obj in objects.items():
        path = out / file
        write_text(path, header + yaml.dump(obj, Dumper=_Dumper, sort_keys=False))
        paths.append(path)
    return paths
