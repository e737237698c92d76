"""``python -m kerasdl.bench.worker CASE_JSON``: measure one case, print its result as JSON.

Used by :func:`kerasdl.bench.harness.run_isolated` to give every case a fresh process.
``python -m kerasdl.bench.worker --paired CASE_JSON`` builds the case and then times steps on
command (:func:`kerasdl.bench.paired.serve`, for :func:`~kerasdl.bench.paired.run_paired`).
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kerasdl.bench.case import Case

    if argv[:1] == ["--paired"]:
        from kerasdl.bench.paired import serve

        return serve(Case.from_json(argv[1]))
    from kerasdl.bench.harness import run_case

    result = run_case(Case.from_json(argv[0]))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
