"""Crafted SavedModels for the safety tests (tests/test_serving_safety.py): each is a real attack.

Loaded with ``--allow-unsafe-ops`` each writes its target file (at load time, or at the warm-up
call of its signature) or reads a file outside its version folder.
"""

from __future__ import annotations

import functools
from pathlib import Path

from conftest_serving import fresh_dir

SPEC = [None, 2]


def _save(module, name: str, signature=None) -> Path:
    import tensorflow as tf

    path = fresh_dir(name) / "model"
    sigs = {"serving_default": signature} if signature is not None else None
    tf.saved_model.save(module, str(path), signatures=sigs)
    return path


def signature_model(name: str, body) -> Path:
    """A model whose ``serving_default(x: float [N, 2])`` runs ``body(x)`` (warm-up calls it)."""
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(SPEC, tf.float32)], autograph=False)
        def serve(self, x):
            return {"y": body(x)}

    module = M()
    return _save(module, name, module.serve)


@functools.cache
def secret() -> Path:
    """A file outside every model folder that a model should not read."""
    path = fresh_dir("secret") / "secret.txt"
    path.write_text("alpha\nbeta\n")
    return path


@functools.cache
def write_in_signature(target: str) -> Path:
    """``serving_default`` writes ``target`` inside a ``tf.cond`` branch (an If function)."""
    import tensorflow as tf

    def body(x):
        def write():
            with tf.control_dependencies([tf.io.write_file(target, "pwned")]):
                return x * 2.0

        return tf.cond(tf.reduce_sum(x) >= 0.0, write, lambda: x)

    return signature_model("write-sig", body)


@functools.cache
def write_at_load(target: str) -> Path:
    """A resource whose ``_initialize`` (run by ``tf.saved_model.load``) writes ``target``."""
    import tensorflow as tf

    class Evil(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.HashTableV2(key_dtype=tf.string, value_dtype=tf.string)

        def _initialize(self):
            return tf.io.write_file(target, "pwned")

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.evil = Evil()

        @tf.function(input_signature=[tf.TensorSpec(SPEC, tf.float32)], autograph=False)
        def serve(self, x):
            return {"y": x + 1.0}

    module = M()
    return _save(module, "write-load", module.serve)


@functools.cache
def write_in_tf1_init_op(target: str) -> Path:
    """A TF1-style SavedModel (no object graph) whose init op, run at load, writes ``target``."""
    import tensorflow as tf

    path = fresh_dir("write-tf1") / "model"
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, SPEC, name="x")
        v = tf.compat.v1.get_variable("v", initializer=2.0, use_resource=True)
        init_op = tf.io.write_file(target, "pwned")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": x * v})
            builder.add_meta_graph_and_variables(
                sess, ["serve"], {"serving_default": signature}, main_op=init_op
            )
            builder.save()
    return path


def _table_model(name: str, filename) -> Path:
    """A vocabulary table initialized from ``filename`` at load (TF Serving's vocab files)."""
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(
                    filename,
                    tf.string,
                    tf.lookup.TextFileIndex.WHOLE_LINE,
                    tf.int64,
                    tf.lookup.TextFileIndex.LINE_NUMBER,
                ),
                default_value=-1,
            )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        def serve(self, words):
            return {"ids": self.table.lookup(words)}

    module = M()
    return _save(module, name, module.serve)


@functools.cache
def vocab_asset() -> Path:
    """The legitimate case: the vocabulary is copied into the version's assets/ at export."""
    vocab = fresh_dir("vocab") / "vocab.txt"
    vocab.write_text("cat\ndog\n")
    return _table_model("vocab-asset", str(vocab))


@functools.cache
def vocab_outside() -> Path:
    """A table whose ``_initialize`` (run at load) reads a constant path outside the model.

    (``tf.lookup.TextFileInitializer`` copies even a constant path into assets/ at export; a
    crafted model spells the op out.)
    """
    import tensorflow as tf

    path = str(secret())

    class Vocab(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.HashTableV2(key_dtype=tf.string, value_dtype=tf.int64)

        def _initialize(self):
            return tf.raw_ops.InitializeTableFromTextFileV2(
                table_handle=self.resource_handle, filename=path, key_index=-2, value_index=-1
            )

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.vocab = Vocab()
            self.vocab._initialize()  # creates the table eagerly (not inside the signature)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        def serve(self, words):
            ids = tf.raw_ops.LookupTableFindV2(
                table_handle=self.vocab.resource_handle,
                keys=words,
                default_value=tf.constant(-1, tf.int64),
            )
            return {"ids": ids}

    module = M()
    return _save(module, "vocab-outside", module.serve)


@functools.cache
def read_passwd() -> Path:
    import tensorflow as tf

    return signature_model(
        "read-passwd",
        lambda x: x + tf.cast(tf.strings.length(tf.io.read_file("/etc/passwd")), tf.float32),
    )


@functools.cache
def matching_files() -> Path:
    import tensorflow as tf

    return signature_model(
        "matching-files", lambda x: x + tf.cast(tf.size(tf.io.matching_files("/etc/*")), tf.float32)
    )


@functools.cache
def tfrecord_reader() -> Path:
    """``serving_default`` reads the first record of a TFRecord file outside the model."""
    import tensorflow as tf

    records = fresh_dir("records") / "data.tfrecord"
    with tf.io.TFRecordWriter(str(records)) as w:
        w.write(b"private record")

    def body(x):
        first = tf.data.TFRecordDataset(str(records)).take(1).get_single_element()
        return x + tf.cast(tf.strings.length(first), tf.float32)

    return signature_model("tfrecord", body)
