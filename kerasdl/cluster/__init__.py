"""Running kerasdl beyond one machine: Kubernetes manifests for multi-worker training.

Modules (none imports TensorFlow):
    env: the environment a worker pod gets (``JOB_COMPLETION_INDEX``, ``KERASDL_WORKER_HOSTS``)
        and the ``TF_CONFIG`` built from it (:func:`~kerasdl.cluster.env.tf_config_from_env`).
    kubernetes: the manifests of ``kerasdl cluster kubernetes`` (Indexed Job, headless Service,
        recipe ConfigMap, shared run-folder volume).

See docs/cluster.md.
"""
