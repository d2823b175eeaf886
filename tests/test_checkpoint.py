"""A loop interrupted and resumed from its checkpoint goes on exactly as if it never stopped.

Real TextCNN groups on the tiny corpus (CPU): every report is checkpointed to disk
(harness.checkpoint), then the run is continued from several of those checkpoints; the rows
after the checkpoint and the end summaries must equal the uninterrupted run's bit for bit
(every column but the wall-clock ones).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness import checkpoint, schema
from harness.data import DataSpec, load_dataset
from harness.trainer import train, train_group
from harness.trialconfig import resolve

CLOCKS = {"elapsed_s"}  # wall-clock columns: the only ones a resumed run may change
SUMMARY_CLOCKS = {"train_seconds", "eval_seconds", "elapsed_seconds", "train_cpu_seconds",
                  "train_samples_per_s", "eval_samples_per_s"}  # fmt: skip


@pytest.fixture(scope="module")
def data(tiny_corpus: Path):
    return load_dataset(DataSpec(name="thucnews", path=str(tiny_corpus)))


def cfg(**flat):
    # 256 train texts / 32 = 8 batches an epoch, a report every 3 batches: reports fall
    # mid-epoch and on an epoch's last batch (step 24)
    base = {"embed": 16, "num_filters": 8, "filter_sizes": [2, 3], "dropout": 0.5,
            "batch_size": 32, "max_epochs": 4, "eval_every": 3, "eval_batch_size": 64,
            "grad_stats_every": 2, "schedule": "cosine", "warmup_steps": 4,
            "checkpoint_every": 1, "seed": 0}  # fmt: skip
    base.update(flat)
    return resolve("TextCNN", base)


def _canon(value):
    """JSON text of a row: floats by repr (bit for bit), NaN equal to NaN."""
    return json.dumps(value, sort_keys=True, default=str)


def _run(cfgs, data, folder: Path, state=None, fuse="auto"):
    rows: list[tuple[int, int, str]] = []
    saved: list[Path] = []

    def report(i, m):
        assert set(m) == {*schema.METRIC_KEYS, schema.LAYERS, schema.LAST}
        rows.append((m["report"], i, _canon({k: v for k, v in m.items() if k not in CLOCKS})))

    def keep(state_now):
        saved.append(checkpoint.write(folder / f"at-{state_now['counters']['reports']}", state_now))

    summaries = train_group(
        cfgs, data, report, device="cpu", fuse=fuse, checkpoint=keep, state=state
    )
    ends = [_canon({k: v for k, v in s.to_dict().items() if k not in SUMMARY_CLOCKS})
            for s in summaries]  # fmt: skip
    return rows, ends, saved


def _check_resumes(cfgs, data, tmp_path: Path, fuse="auto", at=(1, 4, 6)):
    rows, ends, saved = _run(cfgs, data, tmp_path / "full", fuse=fuse)
    assert len(saved) >= max(at)
    for k in at:
        state = checkpoint.read(saved[k - 1])
        assert state["counters"]["reports"] == k
        again, ends_again, _ = _run(cfgs, data, tmp_path / f"from-{k}", state=state, fuse=fuse)
        assert again == [r for r in rows if r[0] > k], f"rows differ after resuming at report {k}"
        assert ends_again == ends, f"summaries differ after resuming at report {k}"
    return rows, ends


def test_a_single_trial_resumes_exactly(data, tmp_path: Path) -> None:
    # report 8 falls on step 24 = the end of epoch 3: resuming there starts epoch 4 afresh
    rows, ends = _check_resumes([cfg()], data, tmp_path, at=(1, 4, 8))
    assert len(rows) == math.ceil(32 / 3)
    assert json.loads(ends[0])["status"] == "COMPLETED"


@pytest.mark.slow
def test_a_group_resumes_exactly_after_a_member_left(data, tmp_path: Path) -> None:
    # member 1 runs out of patience early (it leaves the group before later checkpoints),
    # the others differ in learning rate, dropout and seed (own dropout streams)
    cfgs = [cfg(learning_rate=3e-3), cfg(learning_rate=0.3, require_improvement=3),
            cfg(learning_rate=1e-2, dropout=0.2, seed=3)]  # fmt: skip
    for fuse in ("stacked", "fused"):
        _, ends = _check_resumes(cfgs, data, tmp_path / fuse, fuse=fuse, at=(1, 3, 6))
        assert [json.loads(e)["status"] for e in ends] == ["COMPLETED"] * 3
        assert json.loads(ends[1])["stopped_early"]


def test_no_checkpoint_when_off_and_one_an_epoch_by_default(data, tmp_path: Path) -> None:
    seen: list[int] = []
    train(cfg(checkpoint_every=0), data, device="cpu", checkpoint=lambda s: seen.append(1))
    assert seen == []
    # default: ceil(8 batches an epoch / 3) = 3 reports between checkpoints; none at the end
    train(cfg(checkpoint_every=None), data, device="cpu",
          checkpoint=lambda s: seen.append(s["counters"]["reports"]))  # fmt: skip
    assert seen == [3, 6, 9]


def test_checkpoint_files_round_trip_every_leaf(tmp_path: Path) -> None:
    state = {"a": [torch.arange(3), None, 1.5, math.inf], "b": {"c": torch.zeros(0), "d": "x"},
             "g": torch.Generator().manual_seed(3).get_state()}  # fmt: skip
    state["alias"] = state["a"][0]  # one storage under two names
    back = checkpoint.read(checkpoint.write(tmp_path / "ck", state))
    assert torch.equal(back["a"][0], state["a"][0]) and back["a"][1:] == [None, 1.5, math.inf]
    assert back["b"]["d"] == "x" and back["b"]["c"].shape == (0,)
    assert torch.equal(back["g"], state["g"]) and torch.equal(back["alias"], state["a"][0])
    assert checkpoint.info(tmp_path / "ck") == {}
    with pytest.raises(ValueError, match="not a readable loop checkpoint"):
        checkpoint.read(tmp_path / "missing")
