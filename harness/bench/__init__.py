"""Benchmarks: `python -m harness.bench fuse|loop|overhead|scale|searchers|zoo`.

Each subcommand lives in its own module here (`harness.bench.<name>`) with a
`main(argv)`; `__main__` only dispatches, so one benchmark's imports (Ray, Optuna)
never slow down or break another.
"""

SUBCOMMANDS: dict[str, str] = {
    "fuse": "N trials trained as one fused group against N runs in turn",
    "loop": "training/evaluation samples/s of one model, with and without gradient statistics",
    "overhead": "what the sweep machinery costs per trial",
    "scale": "how the driver's cost grows with the number of trials (100 .. 5,000)",
    "searchers": "search methods compared on the same budget",
    "zoo": "every model of the zoo on one data set",
}
