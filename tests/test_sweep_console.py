"""harness.sweep.console: the lines a person watches while a sweep runs."""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

from helpers import SMOKE

from harness import sweep
from harness.config import load_spec


def test_console_lines_are_short_and_informative() -> None:
    spec = load_spec(SMOKE)
    out = io.StringIO()
    c = sweep.Console(spec, out=out)
    rows = [
        {"trial_id": "aaa", "trial_number": 0, "status": "COMPLETED", "metric": 0.8,
         "iterations": 20, "train_s": 1.5, "param.learning_rate": 0.001,
         "param.filter_sizes": "[2, 3]", "best_iteration": 20},
        {"trial_id": "bbb", "trial_number": 1, "status": "FAILED", "error": "ValueError: x\nmore",
         "param.learning_rate": 0.005},
    ]  # fmt: skip
    for r in rows:
        c.trial_line(r)
    c.summary(rows, Path("results/smoke"), 12.0)
    text = out.getvalue()
    assert "[1/4]  aaa (#0)  COMPLETED" in text and "(baseline)" in text
    assert "filter_sizes=[2,3]" in text
    assert "failed: ValueError: x" in text and "more" not in text
    assert "best trial aaa (#0): best_dev_acc 0.8 (the baseline itself)" in text
    assert "best config:" in text and "filter_sizes: [2, 3]" in text
    assert "  aaa (#0)  0.8" in text  # the top table names trials the same way
    assert "python -m harness.train --replay results/smoke --trial aaa" in text


def test_a_resumed_sweep_counts_on_and_an_interrupted_one_says_how_to_go_on() -> None:
    spec = load_spec(SMOKE)
    out = io.StringIO()
    c = sweep.Console(spec, out=out)
    c.resuming(finished=2, rerun=1, remaining=2)
    c.trial_line({"trial_id": "ccc", "trial_number": 2, "status": "PRUNED", "metric": 0.5})
    c.interrupted(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  resuming: 2 trials done, 1 interrupted (run again from the start), 1 new"
    assert lines[1].startswith("[3/4]  ccc (#2)  PRUNED")
    assert "--resume" in lines[2]


def test_a_resume_with_nothing_left_says_no_grouping_of_zero_trials() -> None:
    from harness.sweep.groups import FusePlan

    spec = load_spec(SMOKE, ["resources.fuse=2"])
    out = io.StringIO()
    c = sweep.Console(spec, out=out)
    cluster = {"cpus": 2, "gpus": 0}
    c.grouping(FusePlan(2, 2), 0, cluster)  # a finished fused sweep, resumed
    assert out.getvalue() == ""
    c.grouping(FusePlan(2, 2), 4, cluster)
    assert out.getvalue().startswith("  4 trials in groups of up to 2")


# --------------------------------------------------------------------- while trials run

REPORT = {"report": 2, "iteration": 10, "epoch": 1, "train_loss": 0.7, "dev_loss": 0.6,
          "dev_acc": 0.7, "best_dev_acc": 0.71}  # fmt: skip
DONE = {"trial_id": "aaa", "trial_number": 0, "status": "COMPLETED", "metric": 0.8,
        "iterations": 20, "train_s": 1.5}  # fmt: skip


def test_piped_a_plain_progress_line_comes_every_few_seconds_while_trials_run() -> None:
    spec = load_spec(SMOKE)
    out = io.StringIO()
    c = sweep.Console(spec, out=out, every_s=0.05)
    c.tick()
    time.sleep(0.1)
    c.tick()
    assert out.getvalue() == ""  # nothing runs yet: nothing to say
    c.trial_started("aaa", 0)
    c.trial_report("aaa", 0, REPORT)
    time.sleep(0.1)
    c.tick()
    c.tick()  # too soon for another
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("progress: 0/4 finished, 1 running, ")
    assert "ETA -" in lines[0]  # nothing finished, no time budget: no pace to go by
    assert "aaa (#0)" in lines[0] and "it=10" in lines[0] and "best_dev_acc=0.71" in lines[0]
    c.trial_line(DONE)
    c.trial_started("bbb", 1)
    time.sleep(0.1)
    c.tick()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("progress: 1/4 finished (1 completed), 1 running, best: aaa (#0) "
                           "best_dev_acc=0.8, ")  # fmt: skip
    assert "ETA ~" in last and "bbb (#1)" in last and "starting" in last
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()  # a file reads plainly


def _screen(text: str) -> list[str]:
    """What a terminal shows after `text`: enough of one for \\r, \\n, ESC[nA and ESC[J."""
    rows: list[list[str]] = [[]]
    r = col = 0
    i = 0
    while i < len(text):
        m = re.match(r"\x1b\[(\d*)([AJ])", text[i:])
        if m:
            if m.group(2) == "A":
                r = max(0, r - int(m.group(1) or 1))
            else:
                del rows[r + 1 :]
                del rows[r][col:]
            i += len(m.group(0))
            continue
        ch = text[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            r += 1
            rows.extend([] for _ in range(r + 1 - len(rows)))
        else:
            row = rows[r]
            row.extend(" " for _ in range(col + 1 - len(row)))
            row[col] = ch
            col += 1
    return ["".join(x).rstrip() for x in rows if "".join(x).strip()]


def test_on_a_terminal_a_live_block_is_redrawn_in_place() -> None:
    """On a real pseudo-terminal: a status line and one line per running trial under the
    lines that stay, redrawn without scrolling, gone when the sweep ends."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))
    written: list[bytes] = []

    def drain() -> str:
        while select.select([master], [], [], 0.05)[0]:
            written.append(os.read(master, 65536))
        return b"".join(written).decode()

    with os.fdopen(slave, "w") as term:
        c = sweep.Console(load_spec(SMOKE), out=term, redraw_s=0.0)
        assert c.is_live()
        c.trial_started("aaa", 0)
        c.trial_started("bbb", 1)
        for _ in range(20):
            c.trial_report("aaa", 0, REPORT)
            c.tick()
        assert _screen(drain()) == [
            "-- 0/4 finished, 2 running, 0s elapsed, ETA -",
            (
                "   aaa (#0)  0s  report 2 it=10 epoch 1  train_loss=0.7 dev_loss=0.6 dev_acc=0.7 "
                "best_dev_acc=0.71"
            ),
            "   bbb (#1)  0s  starting",
        ]  # twenty redraws, one block
        c.trial_line(DONE)
        screen = _screen(drain())
        assert screen[0].startswith("[1/4]  aaa (#0)  COMPLETED") and len(screen) == 3
        assert screen[1].startswith("-- 1/4 finished (1 completed), 1 running, best: aaa (#0) ")
        assert screen[2] == "   bbb (#1)  0s  starting"
        c.stop()
        assert len(_screen(drain())) == 1  # the block is gone; the trial line stays
        c.tick()
        assert len(_screen(drain())) == 1  # and stays gone
    os.close(master)


def test_the_console_names_what_auto_chose_and_why(tmp_path: Path) -> None:
    spec = load_spec(SMOKE, ["method=auto"])
    out = io.StringIO()
    sweep.Console(spec, out=out).search(sweep.plan_search(spec, tmp_path))
    (line,) = out.getvalue().splitlines()
    assert line.startswith("  search: auto chose TPE, multivariate + group, constant liar, 3 ")
    assert "(the baseline and 2 drawn around the classic values)" in line
    assert "2 of 4 parameters continuous; early termination prunes trials" in line
    out = io.StringIO()
    sweep.Console(load_spec(SMOKE), out=out).search(sweep.plan_search(load_spec(SMOKE), tmp_path))
    assert out.getvalue() == ""  # method tpe: nothing was chosen


def _summary(rows: list[dict], folder: Path, **kw) -> str:
    out = io.StringIO()
    c = sweep.Console(load_spec(SMOKE), out=out)
    for r in rows:
        c.trial_line(r)
    c.summary(rows, folder, 12.0)
    return out.getvalue()


ROWS = [
    {"trial_id": "aaa", "trial_number": 0, "status": "COMPLETED", "metric": 0.8128,
     "test_acc": 0.801, "iterations": 218, "best_iteration": 210, "train_s": 1.5},
    {"trial_id": "bbb", "trial_number": 1, "status": "COMPLETED", "metric": 0.8197,
     "test_acc": 0.8123, "iterations": 240, "best_iteration": 150, "train_s": 1.7},
    {"trial_id": "ccc", "trial_number": 2, "status": "PRUNED", "metric": 0.7, "iterations": 30,
     "best_iteration": 30, "train_s": 0.2},
]  # fmt: skip


def test_the_summary_says_the_gain_once_in_points_with_the_test_accuracy(tmp_path: Path) -> None:
    text = _summary(ROWS, tmp_path / "r")
    line = next(x for x in text.splitlines() if x.startswith("best trial"))
    assert line == ("best trial bbb (#1): best_dev_acc 0.8197, +0.69 pt over the baseline "
                    "(0.8128); test_acc 0.8123")  # fmt: skip
    assert "best best_" not in text and "vs baseline" not in text
    assert sweep.console.gain("best_dev_loss", "minimize", 0.40, 0.45) == "0.05 below the baseline"


def test_both_iteration_numbers_are_named_in_the_lines_and_the_table(tmp_path: Path) -> None:
    """`it` is the batch the trial ended at, `best_it` the one its best dev loss came from
    (the weights kept and tested): the trial line and the table give both, named alike."""
    lines = _summary(ROWS, tmp_path / "r").splitlines()
    assert "  it=218  best_it=210  " in lines[0]
    head = next(x for x in lines if x.lstrip().startswith("trial "))
    assert head.split()[:6] == ["trial", "best_dev_acc", "test_acc", "it", "best_it", "train_s"]
    row = next(x for x in lines if x.startswith("  bbb (#1)"))
    assert row.split()[2:6] == ["0.8197", "0.8123", "240", "150"]


def test_paths_under_the_working_folder_are_shown_relative(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = (tmp_path / "results" / "smoke").resolve()  # the runner resolves the folder
    out = io.StringIO()
    c = sweep.Console(load_spec(SMOKE), out=out)
    c.announce(folder, {"address": "127.0.0.1:1", "nodes": 1, "cpus": 2, "gpus": 0})
    c.summary(ROWS, folder, 12.0)
    text = out.getvalue()
    assert str(tmp_path) not in text
    assert "  results -> results/smoke/  (Ray's log: results/smoke/ray.log)" in text
    assert "tensorboard --logdir results/smoke/tb; optuna-dashboard sqlite:///results/smoke/o" in text
    assert "--replay results/smoke --trial bbb" in text
    outside = io.StringIO()
    sweep.Console(load_spec(SMOKE), out=outside).summary(ROWS, Path("/elsewhere/r"), 1.0)
    assert "--replay /elsewhere/r --trial bbb" in outside.getvalue()


def test_the_start_says_what_is_starting_and_an_unfused_sweep_says_nothing_of_fuse() -> None:
    from harness.sweep.groups import FusePlan

    out = io.StringIO()
    c = sweep.Console(load_spec(SMOKE), out=out)
    c.starting_ray(None)
    c.grouping(FusePlan("auto", 1, "CPU trials: fused groups measured no faster on CPU"), 4, {})
    c.starting_trials(4)
    assert out.getvalue().splitlines() == [
        "  starting a private Ray on 127.0.0.1 (a few seconds) ...",
        "  starting the first trials (a process each: torch, the loop, the data) ...",
    ]


def test_the_table_ranks_as_keep_best_does_ties_to_the_earlier_trial() -> None:
    """The top table takes the best few of every row (a partial sort, each time it prints):
    COMPLETED trials only, ties to the earlier Optuna trial whatever the rows' order."""
    out = io.StringIO()
    c = sweep.Console(load_spec(SMOKE), out=out)
    rows = [{"trial_id": f"t{n}", "trial_number": n, "status": "COMPLETED", "metric": 0.5}
            for n in range(9, 1, -1)]  # fmt: skip
    rows += [{"trial_id": "p", "trial_number": 0, "status": "PRUNED", "metric": 0.99},
             {"trial_id": "best", "trial_number": 1, "status": "COMPLETED", "metric": 0.9}]  # fmt: skip
    assert [r["trial_id"] for r in c.ranked(rows, 3)] == ["best", "t2", "t3"]
    c.table(rows, top=3)
    assert [line.split()[0] for line in out.getvalue().splitlines()[1:]] == ["best", "t2", "t3"]
