"""Benchmarks: `python -m harness.bench gpu|fuse|history|loop|overhead|record|scale|searchers|zoo`.

Each subcommand lives in its own module here (`harness.bench.<name>`) with a
`main(argv)`; `__main__` only dispatches, so one benchmark's imports (Ray, Optuna)
never slow down or break another.
"""

SUBCOMMANDS: dict[str, str] = {
    "gpu": "the GPU path's acceptance checks and figures (one line per check, then JSON)",
    "fuse": "N trials trained as one fused group against N runs in turn",
    "history": "auto's TPE over its latest trials against over every trial (replayed tables)",
    "loop": "training/evaluation samples/s of one model, with and without gradient statistics",
    "overhead": "what the sweep machinery costs per trial",
    "record": "record a table of learning curves for `searchers --replay`",
    "scale": "how the driver's cost grows with the number of trials (100 .. 5,000)",
    "searchers": "search methods compared on the same budget",
    "zoo": "every model of the zoo on one data set",
}
