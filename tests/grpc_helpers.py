"""Helpers of the gRPC serving tests: REST and gRPC servers over one repository, as
``kerasdl serve --grpc-port`` wires them, and a SavedModel with TF Serving's tf.Example
signatures (built with TensorFlow, not with kerasdl)."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from conftest_serving import UvicornThread, fresh_dir, model_base
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from kerasdl.serving.app import ServerConfig, create_app
from kerasdl.serving.grpc_server import GrpcServer
from kerasdl.serving.repository import ModelRepository

MAX_BATCH = 16
MAX_MESSAGE = 256 * 1024
INVALID = grpc.StatusCode.INVALID_ARGUMENT


class Servers(UvicornThread):
    """REST (uvicorn, in a thread) and gRPC over one repository, as ``kerasdl serve`` runs them."""

    def __init__(self, repo: ModelRepository, config: ServerConfig | None = None, **grpc_kw):
        self.repo = repo
        self.config = config or ServerConfig(max_batch=MAX_BATCH)
        self.grpc = GrpcServer(repo, self.config, port=0, **grpc_kw)
        self.grpc_port = self.grpc.bind()
        self.grpc.attach(repo)
        super().__init__(create_app(repo, self.config), start_timeout=120, stop_timeout=60)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def __exit__(self, *exc: object) -> None:
        self.channel.close()
        super().__exit__(*exc)


def rpc_error(rpc, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        rpc(request, timeout=30)
    return info.value.code(), info.value.details()


LABELS = [b"low", b"high"]


@functools.cache
def example_model() -> Path:
    """Signatures over serialized tf.Example with a float feature ``x`` of 2 values.

    ``serving_default`` classifies (classes + scores = softmax([-s, s]), s = x0 + x1),
    ``regress`` regresses (outputs = s as [N, 1]), ``scores_only`` classifies with scores alone.
    """
    spec = tf.TensorSpec([None], tf.string)

    def total(serialized):
        feats = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32)})
        return tf.reduce_sum(feats["x"], axis=1)

    class Examples(tf.Module):
        @tf.function(input_signature=[spec], autograph=False)
        def classify(self, inputs):
            s = total(inputs)
            scores = tf.nn.softmax(tf.stack([-s, s], axis=1))
            classes = tf.tile(tf.constant([LABELS]), [tf.shape(s)[0], 1])
            return {"classes": classes, "scores": scores}

        @tf.function(input_signature=[spec], autograph=False)
        def scores_only(self, inputs):
            s = total(inputs)
            return {"scores": tf.nn.softmax(tf.stack([-s, s], axis=1))}

        @tf.function(input_signature=[spec], autograph=False)
        def regress(self, inputs):
            return {"outputs": total(inputs)[:, None]}

    module = Examples()
    path = fresh_dir("grpc-examples") / "ex" / "1"
    sigs = {
        "serving_default": module.classify,
        "scores_only": module.scores_only,
        "regress": module.regress,
    }
    tf.saved_model.save(module, str(path), signatures=sigs)
    return path


def example(x0: float, x1: float | None = None) -> tf.train.Example:
    values = [x0] if x1 is None else [x0, x1]
    feature = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature={"x": feature}))


def digits_and_examples_servers(name: str) -> Iterator[Servers]:
    """Servers over a fresh base holding the exported digits model and :func:`example_model`
    (as ``ex``), with a small gRPC message limit; for a module-scoped fixture."""
    base = model_base(name)
    shutil.copytree(example_model(), base / "ex" / "1")
    with Servers(ModelRepository(base, poll_interval=0.0), max_message_bytes=MAX_MESSAGE) as srv:
        yield srv
