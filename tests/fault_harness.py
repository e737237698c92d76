"""Run ``kerasdl`` with a fault injected at a chosen point of a training run (for test_faults.py).

Usage: ``python tests/fault_harness.py POINT EPOCH -- kerasdl-arguments...``

The process kills itself (SIGKILL, or SIGINT / SIGTERM for the ``*_sigint`` / ``*_sigterm``
points) at the point named, the first time it is reached in epoch ``EPOCH`` (0-based), and exits
normally if it never is. Points, in the order a run reaches them:

    mid_epoch          after the epoch's first training step (or execution of steps)
    history_write      halfway through writing the epoch's history.csv row
    best_save          after half of the new best.keras is written to its temporary file
    backup_data        after the epoch's checkpoint data is written, before the state file
    backup_torn        a truncated checkpoint index and a temporary folder, then the kill
    between_epochs     at the start of the next epoch (everything of EPOCH is written)
    preprocess_write   preprocess.json written but not renamed into place (EPOCH ignored)
    run_info_write     halfway through the final run_info.json (EPOCH ignored)
    metrics_write      halfway through metrics.json (EPOCH ignored)

Nothing here changes kerasdl's files: the faults are monkeypatches of this process only.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _die(sig: int = signal.SIGKILL) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), sig)
    if sig != signal.SIGKILL:  # SIGINT becomes KeyboardInterrupt at the next bytecode
        import time

        time.sleep(30)


def install(point: str, epoch: int) -> None:
    import keras
    import tensorflow as tf

    from kerasdl import runfolder
    from kerasdl.training import callbacks as cb

    sig = signal.SIGKILL
    if point.endswith("_sigint"):
        point, sig = point[: -len("_sigint")], signal.SIGINT
    elif point.endswith("_sigterm"):
        point, sig = point[: -len("_sigterm")], signal.SIGTERM
    current = {"epoch": -1, "batches": 0}

    original_begin = keras.callbacks.CSVLogger.on_epoch_begin

    def on_epoch_begin(self, e, logs=None):
        current["epoch"], current["batches"] = e, 0
        if point == "between_epochs" and e == epoch + 1:
            _die(sig)
        return original_begin(self, e, logs)

    keras.callbacks.CSVLogger.on_epoch_begin = on_epoch_begin

    original_batch_end = keras.callbacks.CSVLogger.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        current["batches"] += 1
        if point == "mid_epoch" and current["epoch"] == epoch and current["batches"] == 1:
            _die(sig)
        return original_batch_end(self, batch, logs)

    keras.callbacks.CSVLogger.on_train_batch_end = on_train_batch_end

    original_csv_end = keras.callbacks.CSVLogger.on_epoch_end

    def csv_epoch_end(self, e, logs=None):
        if point == "history_write" and e == epoch:
            self.csv_file.write(f"{e},0.12")  # half a row, then the crash
            self.csv_file.flush()
            _die(sig)
        return original_csv_end(self, e, logs)

    keras.callbacks.CSVLogger.on_epoch_end = csv_epoch_end

    original_save = cb.save_model_atomic

    def save_model_atomic(model, path):
        if point == "best_save" and current["epoch"] == epoch:
            path = Path(path)
            tmp = path.with_name(f".{path.stem}.tmp.keras")
            model.save(tmp)
            data = tmp.read_bytes()
            tmp.write_bytes(data[: len(data) // 2])
            _die(sig)
        return original_save(model, path)

    cb.save_model_atomic = save_model_atomic

    original_manager_save = tf.train.CheckpointManager.save

    def manager_save(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == epoch + 1 and point in ("backup_data", "backup_torn"):
            prefix = os.path.join(self.directory, f"ckpt-{checkpoint_number}")
            if point == "backup_data":
                self._checkpoint.write(prefix)  # data and index, not yet in the state file
            else:
                Path(f"{prefix}.index").write_bytes(b"\x00" * 17)
                temp = Path(f"{prefix}_temp")
                temp.mkdir(exist_ok=True)
                (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\x01" * 100)
            _die(sig)
        return original_manager_save(self, checkpoint_number=checkpoint_number, **kwargs)

    tf.train.CheckpointManager.save = manager_save

    original_json = runfolder.write_json_atomic

    def write_json_atomic(path, data):
        name = Path(path).name
        final_info = name == "run_info.json" and "final_weights_fingerprint" in data
        if (point == "metrics_write" and name == "metrics.json") or (
            point == "run_info_write" and final_info
        ):
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text('{"half": ')
            _die(sig)
        return original_json(path, data)

    runfolder.write_json_atomic = write_json_atomic

    original_replace = os.replace

    def replace(src, dst, *args, **kwargs):  # the rename that makes a written file visible
        if point == "preprocess_write" and Path(dst).name == "preprocess.json":
            _die(sig)  # written to its temporary file, not yet renamed
        return original_replace(src, dst, *args, **kwargs)

    os.replace = replace
    import kerasdl.training.runner as runner

    runner.write_json_atomic = write_json_atomic


def main() -> int:
    point, epoch = sys.argv[1], int(sys.argv[2])
    args = sys.argv[sys.argv.index("--") + 1 :]
    from kerasdl import cli

    cli.quiet_first_tensorflow_import()
    install(point, epoch)
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
