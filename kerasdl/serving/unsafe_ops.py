"""The deny-list of :mod:`kerasdl.serving.safety`: TensorFlow ops that touch files, processes or
the network, as data, one line of reason each.

Built from a pass over every op this TensorFlow registers (``tf.raw_ops`` and the internal ones),
looking for ops that open, list, read, write or delete files, talk to other processes or hosts,
run Python or MLIR the graph does not contain, or stop the process. A :class:`Rule`'s
``allowed_when`` names the one condition under which a use is accepted (the scanner decides it
from the graph); ``deny_list_markdown()`` renders the table in docs/serving.md.

Not listed, on purpose: ``Print`` (writes to stderr), ``DecodeImage`` and the other decoders (they
decode bytes the request sent), summary ops that only build protos (``ScalarSummary``, ...),
``IdentityReader`` (reads nothing), TPU-only ops without a CPU or GPU kernel other than those that
configure the host.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

FILE = "file system"
DATA = "data files"
NETWORK = "network"
PROCESS = "process"
HIDDEN = "hidden code"


class Rule(NamedTuple):
    """Why an op is refused, and what makes one use of it acceptable.

    Attributes:
        category: FILE, DATA, NETWORK, PROCESS or HIDDEN.
        reason: one line, shown in the refusal.
        path_input: index of the input holding the path or address (shown when it is a constant).
        path_attr: the attribute holding the path or address.
        allowed_when: the name of the condition under which a use is accepted (see module doc).
    """

    category: str
    reason: str
    path_input: int | None = None
    path_attr: str | None = None
    allowed_when: str | None = None


def _rules(category: str, reason: str, names: Iterable[str], **kw: Any) -> dict[str, Rule]:
    return {name: Rule(category, reason, **kw) for name in names}


# fmt: off
DENIED_OPS: dict[str, Rule] = {
    # --- files -------------------------------------------------------------------------------
    "WriteFile": Rule(FILE, "writes a file", 0),
    "ReadFile": Rule(FILE, "reads a file", 0, allowed_when="asset"),
    "MatchingFiles": Rule(FILE, "lists files matching a pattern", 0),
    "FileSystemSetConfiguration": Rule(FILE, "changes the process's file-system settings"),
    "ImmutableConst": Rule(FILE, "memory-maps a file region", path_attr="memory_region_name"),
    **_rules(FILE, "writes checkpoint files", ["Save", "SaveSlices", "SaveV2"], path_input=0),
    "MergeV2Checkpoints": Rule(FILE, "merges checkpoint files and deletes the sources", 1),
    **_rules(FILE, "reads a checkpoint", ["Restore", "RestoreSlice", "RestoreV2",
                                          "DTensorRestoreV2"], path_input=0,
             allowed_when="saver_restore"),
    "LoadAndRemapMatrix": Rule(FILE, "reads a checkpoint", 0),
    "GenerateVocabRemapping": Rule(FILE, "reads vocabulary files", 0),
    **_rules(FILE, "reads a text file into a lookup table",
             ["InitializeTableFromTextFile", "InitializeTableFromTextFileV2"], path_input=1,
             allowed_when="asset"),
    "FixedUnigramCandidateSampler": Rule(FILE, "reads its vocab_file", path_attr="vocab_file",
                                         allowed_when="no_vocab_file"),
    "Skipgram": Rule(FILE, "reads a text corpus file", path_attr="filename"),
    "RecordInput": Rule(FILE, "reads records from files matching a pattern",
                        path_attr="file_pattern"),
    **_rules(FILE, "reads a proto descriptor file (descriptor_source is a path)",
             ["DecodeProtoV2", "EncodeProto"], path_attr="descriptor_source",
             allowed_when="local_descriptor"),
    "PrintV2": Rule(FILE, "appends to a file (output_stream file://...)",
                    path_attr="output_stream", allowed_when="no_file_stream"),
    "DumpTensor": Rule(FILE, "writes tensors to a file", path_attr="log_dir_path"),
    "CalibrationStatisticsSaver": Rule(FILE, "writes calibration statistics to a file",
                                       path_attr="output_file_path"),
    **_rules(FILE, "creates a file reader (reads files named by a queue)",
             ["WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
              "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "TFRecordReader",
              "TFRecordReaderV2"]),
    "LMDBReader": Rule(FILE, "creates an LMDB database reader"),
    **_rules(FILE, "reads records through a file reader",
             ["ReaderRead", "ReaderReadV2", "ReaderReadUpTo", "ReaderReadUpToV2"]),
    "CreateSummaryFileWriter": Rule(FILE, "opens a TensorBoard event file for writing", 1),
    "CreateSummaryDbWriter": Rule(FILE, "opens an SQLite summary database for writing", 1),
    "SummaryWriter": Rule(FILE, "a summary writer (writes event files)"),
    **_rules(FILE, "writes a summary to a summary writer's file",
             ["WriteSummary", "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary",
              "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary", "ImportEvent"]),
    **_rules(FILE, "flushes a summary writer's events to disk",
             ["FlushSummaryWriter", "CloseSummaryWriter"]),
    "StatsAggregatorSetSummaryWriter": Rule(FILE, "sends tf.data statistics to a summary writer"),
    **_rules(FILE, "sends tensors to its debug_urls (file:// writes files, grpc:// the network)",
             ["DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount",
              "DebugNumericSummary"], path_attr="debug_urls"),
    **_rules(FILE, "dumps tensors to the debug URLs of its debug_ops_spec", ["Copy", "CopyHost"],
             path_attr="debug_ops_spec", allowed_when="no_debug_spec"),
    # --- tf.data sources and sinks -----------------------------------------------------------
    **_rules(DATA, "reads record files", ["TFRecordDataset", "TFRecordDatasetV2",
                                          "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2"],
             path_input=0),
    "TextLineDataset": Rule(DATA, "reads text files", 0),
    **_rules(DATA, "reads CSV files", ["CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset"],
             path_input=0),
    **_rules(DATA, "reads LMDB database files", ["LMDBDataset", "ExperimentalLMDBDataset"],
             path_input=0),
    **_rules(DATA, "queries an SQLite database file", ["SqlDataset", "ExperimentalSqlDataset"],
             path_input=1),
    **_rules(DATA, "lists files matching patterns",
             ["MatchingFilesDataset", "ExperimentalMatchingFilesDataset"], path_input=0),
    "LoadDataset": Rule(DATA, "reads a saved dataset from a directory", 0),
    **_rules(DATA, "writes a dataset to a directory", ["SaveDataset", "SaveDatasetV2"],
             path_input=1),
    **_rules(DATA, "reads and writes snapshot files", ["SnapshotDataset", "SnapshotDatasetV2"],
             path_input=1),
    **_rules(DATA, "reads snapshot files", ["SnapshotDatasetReader", "SnapshotChunkDataset",
                                            "ListSnapshotChunksDataset"], path_input=0),
    **_rules(DATA, "writes a TFRecord file", ["DatasetToTFRecord", "ExperimentalDatasetToTFRecord"],
             path_input=1),
    **_rules(DATA, "caches elements in files (allowed: the in-memory cache, filename '')",
             ["CacheDataset", "CacheDatasetV2"], path_input=1, allowed_when="empty_filename"),
    # --- network -----------------------------------------------------------------------------
    **_rules(NETWORK, "reads from a tf.data service at a network address",
             ["DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3",
              "DataServiceDatasetV4"], path_input=2),
    **_rules(NETWORK, "registers a dataset with a tf.data service",
             ["RegisterDataset", "RegisterDatasetV2"], path_input=1),
    "DistributedSave": Rule(NETWORK, "has a tf.data service write a dataset to a directory", 1),
    **_rules(NETWORK, "starts a gRPC server", ["RpcServer", "RpcServerStart",
                                               "RpcServerRegister"]),
    **_rules(NETWORK, "calls a gRPC server", ["RpcClient", "RpcCall"]),
    "RemoteCall": Rule(NETWORK, "runs a function on another device or task (another host)", 0),
    **_rules(NETWORK, "exchanges tensors with another device or process",
             ["Send", "Recv", "_Send", "_Recv", "_HostSend", "_HostRecv"]),
    **_rules(NETWORK, "exchanges tensors with other workers (a lone server waits for them)",
             ["CollectiveReduce", "CollectiveReduceV2", "CollectiveReduceV3", "CollectiveGather",
              "CollectiveGatherV2", "CollectiveBcastSend", "CollectiveBcastSendV2",
              "CollectiveBcastRecv", "CollectiveBcastRecvV2", "CollectiveAllToAllV2",
              "CollectiveAllToAllV3", "CollectiveReduceScatterV2",
              "CollectiveInitializeCommunicator", "NcclAllReduce", "NcclBroadcast", "NcclReduce",
              "_NcclReduceSend", "_NcclReduceRecv", "_NcclBroadcastSend", "_NcclBroadcastRecv"]),
    # --- the process and the host ------------------------------------------------------------
    **_rules(PROCESS, "calls a Python function of the server process (by token)",
             ["PyFunc", "PyFuncStateless", "EagerPyFunc"]),
    "Abort": Rule(PROCESS, "terminates the server process"),
    **_rules(PROCESS, "configures or shuts down the host's accelerator system or its cluster",
             ["ConfigureDistributedTPU", "ShutdownDistributedTPU", "_ConfigureDistributedTPU",
              "_InitializeHostForDistributedTPU", "_WaitForDistributedTPU",
              "_ShutdownDistributedTPU", "_DisconnectHostFromDistributedTPUSystem",
              "ConfigureAndInitializeGlobalTPU", "ShutdownTPUSystem", "ConnectTPUEmbeddingHosts",
              "ConfigureTPUEmbeddingHost", "WorkerHeartbeat"]),
    # --- code the check cannot see -----------------------------------------------------------
    "DatasetFromGraph": Rule(HIDDEN, "builds a dataset from a serialized graph (unchecked ops)"),
    "MlirPassthroughOp": Rule(HIDDEN, "runs an MLIR module held in an attribute (unchecked ops)"),
}

DENIED_OP_PREFIXES: dict[str, Rule] = {
    "IO>": Rule(FILE, "a tensorflow-io op (files, databases, network streams)"),
}
# fmt: on


def deny_list_markdown() -> str:
    """The deny-list as a Markdown table (one row per reason), for docs/serving.md."""
    rows: dict[tuple[str, str, str | None], list[str]] = {}
    for op, rule in DENIED_OPS.items():
        rows.setdefault((rule.category, rule.reason, rule.allowed_when), []).append(op)
    lines = ["| ops | why | allowed when |", "|---|---|---|"]
    for (_, reason, when), ops in rows.items():
        names = ", ".join(f"`{op}`" for op in ops)
        lines.append(f"| {names} | {reason} | {_ALLOWED_TEXT.get(when, '')} |")
    return "\n".join(lines)


_ALLOWED_TEXT = {
    "asset": "the filename is an asset of the version, inside its `assets/`",
    "saver_restore": "in the saver's restore op, reading the prefix the loader feeds "
    "(`variables/variables`)",
    "empty_filename": "the filename is the constant `''` (in memory)",
    "no_file_stream": "`output_stream` is not `file://...`",
    "local_descriptor": "`descriptor_source` is `local://` or `bytes://...`",
    "no_debug_spec": "`debug_ops_spec` is empty",
    "no_vocab_file": "`vocab_file` is empty",
}


__all__ = ["DENIED_OPS", "DENIED_OP_PREFIXES", "Rule", "deny_list_markdown"]
