# kerasdl, CPU image: the package built into a wheel and installed on a slim Python.
#
#   docker build -t kerasdl:cpu .
#   docker run --rm kerasdl:cpu kerasdl train            # the quickstart recipe, in the image
#   docker run --rm -v "$PWD/runs:/runs" kerasdl:cpu kerasdl train --set run.output_dir=/runs
#
# The manifests of `kerasdl cluster kubernetes ... --image IMAGE` run this image (push it to a
# registry the cluster can pull from first: docker tag kerasdl:cpu REGISTRY/kerasdl:cpu && docker
# push REGISTRY/kerasdl:cpu). The GPU variant is Dockerfile.gpu. See docs/cluster.md.
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS wheel
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY kerasdl ./kerasdl
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON}-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
COPY --from=wheel /wheels /wheels
RUN pip install /wheels/*.whl "optuna>=4,<5" && rm -rf /wheels \
    && useradd --create-home --uid 1000 kerasdl && mkdir /runs && chown kerasdl /runs
USER 1000
WORKDIR /home/kerasdl
# the workers' gRPC port (KERASDL_WORKER_HOSTS) and kerasdl serve's default REST port
EXPOSE 2222 8501
CMD ["kerasdl", "--help"]
