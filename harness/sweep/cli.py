"""The command line: `python -m harness.sweep SPEC [--set KEY=VALUE ...]`.

Here rather than in __main__.py so that harness.sweep can re-export `main` without
importing __main__ itself (runpy would then warn on every `python -m harness.sweep`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from harness.config import load_spec
from harness.errors import exit_on_user_error
from harness.sweep.runner import run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.sweep",
        description="Run a hyperparameter sweep: Ray Tune schedules, Optuna searches, "
        "Parquet holds the results.",
    )
    p.add_argument("spec", help="search-space file, e.g. search_spaces/textcnn.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value by dotted key (repeatable), e.g. budget.num_samples=8",
    )
    p.add_argument("--address", help="join a running Ray cluster (default: RAY_ADDRESS, else a "
                   "private local Ray on 127.0.0.1)")  # fmt: skip
    p.add_argument("--storage", help="where Ray Tune keeps its experiment state (dir or URI such "
                   "as s3://bucket/path); default results/<name>/ray")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--overwrite", action="store_true", help="replace results/<name>/ if it exists")
    p.add_argument("--results", default="results", help="folder holding results/<name>/")
    return p


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns its exit status: 0, 130 when interrupted (--resume goes on), 1
    when the results could not be written mid-run (one line: what was kept, how to go on)."""
    started = time.time()
    args = _parser().parse_args(argv)
    spec = load_spec(args.spec, args.overrides)
    try:
        out = run(
            spec,
            results_root=args.results,
            address=args.address,
            storage=args.storage,
            resume=args.resume,
            overwrite=args.overwrite,
            command=[
                sys.executable,
                "-m",
                "harness.sweep",
                *(argv if argv is not None else sys.argv[1:]),
            ],
            started=started,
        )
    except KeyboardInterrupt:  # a second Ctrl-C cut Tune's orderly stop short
        print(
            "interrupted: the sweep stopped before its end; continue with the same command "
            "plus --resume",
            flush=True,
        )
        return 130
    if out.fault:  # the record could not be written mid-run: what was kept, how to go on
        sys.stdout.flush()  # the console's lines first, where both go to one pipe
        print(f"error: {out.fault}", file=sys.stderr)
        return 1
    return 130 if out.interrupted else 0
