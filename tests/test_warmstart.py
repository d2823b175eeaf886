"""harness.warmstart: earlier sweeps' trials start a new study, once, or are refused clearly.

The earlier sweeps here are real results folders as far as warm start reads them: a
sweep.json holding the resolved spec and a real Optuna SQLite study whose trials carry the
earlier space's distributions (no Ray: the Ray test at the end runs real sweeps).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from helpers import SMOKE, study
from optuna.trial import TrialState

from harness import parts, space, sweep, warmstart
from harness import results as rs
from harness.config import SweepSpec, load_spec
from harness.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def earlier(folder: Path, spec: SweepSpec, trials: list[tuple[dict[str, Any], Any, str]]) -> Path:
    """A results folder as a finished sweep of `spec` leaves it: (params, value, state)."""
    folder.mkdir(parents=True)
    (folder / rs.SWEEP_FILE).write_text(json.dumps({"spec": spec.to_dict()}))
    st = optuna.create_study(
        study_name=spec.name, storage=sweep.optuna_storage_url(folder), direction="maximize"
    )
    dists = space.optuna_space(spec.parameters)
    for params, value, state in trials:
        encoded = space.encode(spec.parameters, {**spec.baseline_params(), **params})
        st.add_trial(
            optuna.trial.create_trial(
                state=TrialState[state],
                value=value if state == "COMPLETE" else None,
                params=encoded,
                distributions=dists,
                intermediate_values={10: 0.5, 20: value or 0.5},
                user_attrs={"ray_trial_id": f"t{len(st.trials)}"},
            )
        )
    return folder


OLD_TRIALS = [
    ({"learning_rate": 0.002, "dropout": 0.2}, 0.61, "COMPLETE"),
    ({"learning_rate": 0.004, "dropout": 0.3, "filter_sizes": [3, 4]}, 0.66, "COMPLETE"),
    ({"learning_rate": 0.008, "dropout": 0.45}, None, "PRUNED"),
    ({"learning_rate": 0.001, "dropout": 0.1}, None, "FAIL"),
]


@pytest.fixture
def old(tmp_path: Path) -> Path:
    return earlier(tmp_path / "results" / "old", load_spec(SMOKE, ["name=old"]), OLD_TRIALS)


def test_compatible_trials_join_the_study_once(old: Path, tmp_path: Path) -> None:
    spec = load_spec(SMOKE, [f"warm_start=[{old}]", "name=new"])
    assert spec.warm_start == (str(old),)
    warm = warmstart.trials(spec)
    assert len(warm.trials) == 3 and warm.left_out == 0  # complete and pruned, not failed
    assert [t.state for t in warm.trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert warm.trials[1].params["filter_sizes"] == "[3, 4]"
    assert warm.trials[1].value == 0.66 and warm.trials[2].intermediate_values[20] == 0.5
    assert {t.user_attrs[warmstart.WARM_ATTR] for t in warm.trials} == {
        f"{old}#0",
        f"{old}#1",
        f"{old}#2",
    }

    folder = tmp_path / "results" / "new"
    folder.mkdir()
    s = sweep.build_searcher(spec, folder)
    st = study(folder, "new")
    # the baseline keeps trial number 0 (enqueued first); the earlier trials follow it
    assert st.trials[0].state == TrialState.WAITING and not warmstart.is_warm(st.trials[0])
    assert sum(warmstart.is_warm(t) for t in st.trials) == 3
    assert s.suggest("a")[sweep.NUMBER] == 0  # the baseline still runs first
    # a second build (what --resume does) adds nothing, and neither does a direct add
    sweep.build_searcher(spec, folder, resume=True)
    assert warmstart.add(st, warmstart.trials(spec)) == 0
    assert sum(warmstart.is_warm(t) for t in study(folder, "new").trials) == 3


def test_the_sampler_starts_from_the_earlier_trials(old: Path, tmp_path: Path) -> None:
    """TPE's start-up counts finished trials: with the earlier ones in the study, the first
    searched trial is already model-based (near the best earlier trial, not a random draw)."""
    spec = load_spec(SMOKE, [f"warm_start=[{old}]", "name=new", "method=tpe", "baseline=false"])
    folder = tmp_path / "results" / "new"
    folder.mkdir()
    s = sweep.build_searcher(spec, folder)
    s.set_search_properties(None, None, {})
    assert len(study(folder, "new").trials) == 3
    assert s.suggest("a")[sweep.NUMBER] == 3  # numbers go on after the earlier trials


def test_a_sweep_of_another_space_leaves_out_what_does_not_fit(old: Path) -> None:
    spec = load_spec(SMOKE, [f"warm_start=[{old}]", "parameters.dropout={min: 0.25, max: 0.5}"])
    warm = warmstart.trials(spec)
    assert len(warm.trials) == 2 and warm.left_out == 1  # dropout 0.2 is outside now
    assert "2 finished trial(s)" in warm.line() and "1 outside this space left out" in warm.line()
    # a setting the new sweep fixes: earlier trials with another value are left out
    fixed = load_spec(SMOKE, [f"warm_start=[{old}]", "parameters.filter_sizes={value: [3, 4]}"])
    assert len(warmstart.trials(fixed).trials) == 1
    # a setting the new sweep searches and the old one fixed: the old value counts
    wider = load_spec(
        SMOKE, [f"warm_start=[{old}]", "parameters.weight_decay={values: [0, 1.0e-4]}"]
    )
    assert [t.params["weight_decay"] for t in warmstart.trials(wider).trials] == [0, 0, 0]


@pytest.mark.parametrize(
    "sets, lines",
    [
        (
            ["parameters.dropout={min: 0.5, max: 0.6}"],
            [
                (
                    "parameters.dropout: no earlier trial lies in this space (searched there over "
                    "[0.1, 0.5]; here [0.5, 0.6])"
                )
            ],
        ),
        (
            [
                "parameters.dropout={min: 0.5, max: 0.6}",
                "parameters.weight_decay={values: [0.001]}",
            ],
            [
                "parameters.dropout: no earlier trial",
                (
                    "parameters.weight_decay: no earlier trial lies in this space (fixed at 0.0 there; "
                    "here [0.001])"
                ),
            ],
        ),
        (
            ["train.max_steps=40"],
            ["train.max_steps: 20 there, 40 here (the objective values would not compare)"],
        ),
        (
            ["metric={name: best_dev_loss}"],
            ["metric: best_dev_acc (maximize) there, best_dev_loss (minimize) here"],
        ),
        (["data.pad_size=16"], ["data.pad_size: 32 there, 16 here"]),
        (
            [
                "parameters.learning_rate={distribution: log_uniform_values, min: 0.003, max: 0.01}",
                "parameters.dropout={min: 0.1, max: 0.25}",
            ],
            ["no earlier trial lies in this space on every setting at once"],
        ),
        (
            ["parameters.learning_rate={values: [0.003, 0.005]}"],
            ["parameters.learning_rate: no earlier trial lies in this space"],
        ),
        (
            ["parameters.filter_sizes={value: [4, 5]}"],
            [
                (
                    "train.filter_sizes: fixed at [4, 5] here; no earlier trial had it (searched "
                    "there over [[2, 3], [3, 4]])"
                )
            ],
        ),
    ],
)
def test_an_incompatible_space_is_one_error_per_setting(
    old: Path, sets: list[str], lines: list[str]
) -> None:
    with pytest.raises(UserError) as err:
        load_spec(SMOKE, [f"warm_start=[{old}]", *sets])
    got = str(err.value).splitlines()
    assert len(got) == len(lines), got
    for line, want in zip(got, lines):
        assert line.startswith(f"{SMOKE} (--set warm_start=[{old}]): warm_start[0]: {old}: ")
        assert want in line, (want, line)


def test_the_command_refuses_an_incompatible_space_before_ray_starts(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sets = [f"warm_start=[{old}]", "parameters.dropout={min: 0.5, max: 0.6}", "train.max_steps=9"]
    with pytest.raises(SystemExit) as exc:
        sweep.main([str(SMOKE), *(x for v in sets for x in ("--set", v)),
                    "--results", str(tmp_path / "new")])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err), err
    assert "warm_start[0]" in err[0] and "train.max_steps: 20 there, 9 here" in err[0]
    assert "parameters.dropout" not in err[0] and "Traceback" not in "".join(err)
    assert not (tmp_path / "new").exists()


def test_not_a_results_folder_and_bad_values(tmp_path: Path, old: Path) -> None:
    with pytest.raises(UserError, match=r"warm_start\[0\]: .*nothing: no such results folder"):
        load_spec(SMOKE, [f"warm_start=[{tmp_path / 'nothing'}]"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"not a results folder of a sweep \(no sweep.json\)"):
        load_spec(SMOKE, [f"warm_start={tmp_path / 'empty'}"])  # one folder, not a list: fine
    with pytest.raises(UserError, match="warm_start: expected a list of results folders"):
        load_spec(SMOKE, ["warm_start={a: 1}"])
    with pytest.raises(UserError, match=r"warm_start\[1\]: named twice"):
        load_spec(SMOKE, [f"warm_start=[{old}, {old}]"])
    other = earlier(tmp_path / "rnn", load_spec(SMOKE, ["name=rnn"]), [])
    spec = json.loads((other / rs.SWEEP_FILE).read_text())
    spec["spec"]["model"] = "TextRNN"
    (other / rs.SWEEP_FILE).write_text(json.dumps(spec))
    with pytest.raises(UserError, match="model: TextRNN there, TextCNN here"):
        load_spec(SMOKE, [f"warm_start=[{other}]"])


def test_a_sweep_cannot_warm_start_from_its_own_folder(old: Path) -> None:
    spec = load_spec(SMOKE, [f"warm_start=[{old}]", "name=old"])
    with pytest.raises(UserError, match="is this sweep's own results folder"):
        sweep.run(spec, results_root=old.parent, overwrite=True, console=False)
    assert (old / rs.SWEEP_FILE).exists()  # --overwrite did not empty it


def test_resume_does_not_count_the_earlier_trials(old: Path, tmp_path: Path) -> None:
    spec = load_spec(SMOKE, [f"warm_start=[{old}]", "name=new"])
    folder = tmp_path / "results" / "new"
    folder.mkdir()
    s = sweep.build_searcher(spec, folder)
    s.suggest("a")
    end = {sweep.MEMBER: 0, sweep.FINAL: True, sweep.STATUS: "COMPLETED", "best_dev_acc": 0.7}
    s.on_trial_complete("a", {sweep.FINAL: True, sweep.GROUP: [end]})
    writer = rs.ResultsWriter(folder, params=list(spec.parameters))
    plan = sweep.plan_resume(spec, folder, writer)
    assert plan.finished == 1 and plan.rerun == []  # the baseline; not the 3 earlier trials


def test_a_live_sweep_gives_its_finished_trials_with_a_warning(old: Path, tmp_path: Path) -> None:
    """Warm-starting from a sweep that still runs (its folder locked) takes the trials it has
    finished so far and says so; once it has ended, no warning."""
    import io

    from harness.lock import FolderLock

    spec = load_spec(SMOKE, [f"warm_start=[{old}]", "name=new"])
    lock = FolderLock.claim(old)
    try:
        warm = warmstart.trials(spec)
        (line,) = warm.warnings()
        assert f"warm_start: {old} is still running (pid {os.getpid()} on " in line
        assert "took the 3 trial(s) it has finished so far" in line
        out = io.StringIO()
        sweep.Console(spec, out=out).search(sweep.plan_search(spec, tmp_path))
        assert out.getvalue().splitlines()[1] == f"warning: {line}"
    finally:
        lock.release()
    assert warmstart.trials(spec).warnings() == []


def test_a_damaged_trials_table_is_refused(old: Path) -> None:
    (old / rs.TRIALS_FILE).write_bytes(b"PAR1\x00\x01")  # an older sweep's file, truncated
    with pytest.raises(UserError, match=r"warm_start\[0\]: .*trials.parquet: not a readable "
                                        r"Parquet file .*this folder is damaged"):  # fmt: skip
        load_spec(SMOKE, [f"warm_start=[{old}]"])
    (old / rs.TRIALS_FILE).unlink()
    writer = rs.ResultsWriter(old)  # a folder of parts: each part must be whole
    writer.set_trial("t0", trial_number=0, status="COMPLETED")
    writer.flush(force=True)
    load_spec(SMOKE, [f"warm_start=[{old}]"])
    part = old / rs.TRIALS_FILE / parts.PART.format(0)
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(UserError, match=rf"{parts.PART.format(0)}: not a readable Parquet file"):
        load_spec(SMOKE, [f"warm_start=[{old}]"])


# ------------------------------------------------------------------------- real sweeps (Ray)


@pytest.mark.ray
@pytest.mark.slow
def test_a_second_sweep_starts_where_the_first_stopped(
    ray_session: object, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Sweep A (auto) runs; sweep B warm-starts from it, then is resumed with a bigger budget:
    A's finished trials are in B's study exactly once, B's own trials fill its budget with the
    baseline first, and the sampler auto chose stays the same across the resume."""
    sets = ["data.name=thucnews", f"data.path={tiny_corpus}", "method=auto",
            "early_terminate={type: none}", "budget.num_samples=3"]  # fmt: skip
    results = tmp_path / "results"
    a = sweep.run(load_spec(SMOKE, [*sets, "name=a"]), results_root=results)
    a_done = [t for t in study(a.folder, "a").trials if t.state.is_finished()]
    assert len(a.rows) == 3 and len(a_done) == 3

    b_spec = load_spec(SMOKE, [*sets, "name=b", f"warm_start=[{a.folder}]"])
    b = sweep.run(b_spec, results_root=results)
    out = capsys.readouterr().out
    assert "  search: auto chose TPE" in out
    assert f"  warm start: 3 finished trial(s) from {a.folder} added to the study" in out
    info = json.loads((b.folder / rs.SWEEP_FILE).read_text())
    assert info["search"]["method"] == "tpe" and info["spec"]["warm_start"] == [str(a.folder)]

    more = load_spec(SMOKE, [*sets, "name=b", f"warm_start=[{a.folder}]", "budget.num_samples=5"])
    b2 = sweep.run(more, results_root=results, resume=True)
    st = study(b2.folder, "b")
    warm = [t for t in st.trials if warmstart.is_warm(t)]
    own = [t for t in st.trials if not warmstart.is_warm(t)]
    assert len(warm) == 3 and len({t.user_attrs[warmstart.WARM_ATTR] for t in warm}) == 3
    assert sorted(t.values for t in warm) == sorted(t.values for t in a_done)
    assert len(own) == 5 and len(b2.rows) == 5 and own[0].number == 0
    trials = pd.read_parquet(b2.folder / rs.TRIALS_FILE)
    assert len(trials) == 5 and trials["trial_id"].is_unique
    assert rs.trial_params(rs.load(b2.folder), trials.iloc[0]["trial_id"]) == more.baseline_params()
    info2 = json.loads((b2.folder / rs.SWEEP_FILE).read_text())
    assert info2["search"] == info["search"] and "resumed" in info2
