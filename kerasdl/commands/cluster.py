"""``kerasdl cluster kubernetes RECIPE --workers N --image IMAGE [...]``."""

from __future__ import annotations

import argparse

from kerasdl.commands._args import add_recipe_arguments
from kerasdl.io import check_output_dir

COMMAND = "cluster"
HELP = "write the manifests that train a recipe on several machines (Kubernetes)"
DESCRIPTION = """Write the Kubernetes manifests of a multi-worker training run.

  kerasdl cluster kubernetes configs/quickstart.yaml --workers 2 --image REGISTRY/kerasdl:cpu
  kubectl apply -f k8s/quickstart/

The manifests (an Indexed Job, a headless Service, the recipe as a ConfigMap, a ReadWriteMany
volume for the run folder) start one pod per worker; each runs 'kerasdl train' with
distribute.strategy multi_worker and builds TF_CONFIG from JOB_COMPLETION_INDEX and
KERASDL_WORKER_HOSTS. Build the image from Dockerfile (CPU) or Dockerfile.gpu; see
docs/cluster.md."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(
        dest="target", metavar="TARGET", required=True, help="where to run: kubernetes"
    )
    k8s = targets.add_parser(
        "kubernetes",
        help="an Indexed Job with a headless Service (kubectl apply -f DIR/)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_arguments(k8s, recipe_required=True, example="training.epochs=30")
    k8s.add_argument("--workers", type=int, required=True, help="worker pods (N >= 1)")
    k8s.add_argument("--image", required=True, help="container image built from the Dockerfile")
    k8s.add_argument(
        "--gpus-per-worker", type=int, default=0, metavar="G", help="GPUs per pod (default 0)"
    )
    k8s.add_argument("--out", metavar="DIR", help="folder for the manifests (default k8s/NAME)")
    k8s.add_argument("--name", help="the Job's and Service's name (default: from run.name)")
    k8s.add_argument(
        "--volume-size", default="10Gi", help="size of the run-folder volume (default 10Gi)"
    )
    k8s.add_argument(
        "--storage-class",
        help="storage class of the run-folder volume (default: the cluster's; needs ReadWriteMany)",
    )


def run(args: argparse.Namespace) -> int:
    from kerasdl.cluster.kubernetes import ClusterSpec, job_name, write_manifests
    from kerasdl.commands._args import load_recipe_arguments

    cfg = load_recipe_arguments(args)
    spec = ClusterSpec(
        name=args.name or job_name(cfg.run.name),
        workers=args.workers,
        image=args.image,
        gpus_per_worker=args.gpus_per_worker,
        volume_size=args.volume_size,
        storage_class=args.storage_class,
    )
    out = str(check_output_dir(args.out or f"k8s/{spec.name}"))
    paths = write_manifests(cfg, spec, out)
    print(f"Wrote {', '.join(str(p) for p in paths)}")
    print(f"Start:  kubectl apply -f {out}/")
    print(f"Follow: kubectl logs -f -l job-name={spec.name} --prefix")
    print(f"Stop:   kubectl delete -f {out}/   (deletes the run-folder volume too)")
    return 0
