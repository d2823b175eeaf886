"""Saved models (harness.bundle): a harness.train run folder holds a model that scores its
test split exactly as the run did, loads without unpickling, and seeds --init-from/--replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness import bundle
from harness.data import DataSpec, load_dataset
from harness.errors import UserError
from harness.train import build_parser, main, resolve_run
from harness.trainer import Loop, autocast_for, evaluate

TINY = ["--set", "embed=16", "--set", "num_filters=8", "--set", "max_steps=12", "--set",
        "eval_every=4", "--set", "batch_size=32", "--set", "grad_stats_every=2",
        "--set", "data.pad_size=16", "--device", "cpu", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["--data", f"thucnews:{tiny_corpus}", *TINY, "--out", str(out)]) == 0
    return out


def _test_texts(corpus: Path) -> list[str]:
    lines = (corpus / "test.txt").read_text(encoding="utf-8").split("\n")
    return [line.strip().rpartition("\t")[0] for line in lines if line.strip()]


def test_a_run_folder_holds_a_model_that_scores_its_test_exactly(
    run_dir: Path, tiny_corpus: Path
) -> None:
    assert {p.name for p in run_dir.iterdir()} >= set(bundle.FILES)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    model = bundle.load(run_dir)
    assert model.config.to_flat() == summary["config"]
    assert (
        model.classes == ("yin", "yang") and model.info["scores"]["test_acc"] == summary["test_acc"]
    )
    data = load_dataset(model.data)
    assert model.vocab == data.vocab
    # new text is encoded exactly as training encoded the split
    x = model.encode(_test_texts(tiny_corpus))
    assert (x == data.test_x).all()
    # the loaded weights give the run's test loss bit for bit
    net = model.build("cpu")
    y = torch.as_tensor(data.test_y)
    acc, _ = evaluate(net, torch.as_tensor(x), y, model.config.train.eval_batch_size,
                      autocast_for(torch.device("cpu"), False))  # fmt: skip
    loss_sum, correct = acc.tolist()
    assert loss_sum / len(y) == summary["test_loss"] and correct / len(y) == summary["test_acc"]


def test_loading_reads_no_pickle_and_names_the_bad_file(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    (bad / bundle.WEIGHTS).write_bytes(b"\x80\x04K\x01.")  # a pickle, not safetensors
    with pytest.raises(UserError, match=r"model\.safetensors: not a readable safetensors file"):
        bundle.load(bad)
    shutil.copy(run_dir / bundle.WEIGHTS, bad / bundle.WEIGHTS)
    (bad / bundle.VOCAB).write_text("[1, 2]")
    with pytest.raises(UserError, match=r"vocab\.json: expected a list of tokens"):
        bundle.load(bad)
    (bad / bundle.META).write_text("{")
    with pytest.raises(UserError, match=r"model\.json: not valid JSON"):
        bundle.load(bad)
    with pytest.raises(UserError, match="no such folder"):
        bundle.load(tmp_path / "nowhere")
    (bad / bundle.META).unlink()
    with pytest.raises(UserError, match="this run saved no model"):
        bundle.locate(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no saved model here"):
        bundle.locate(tmp_path / "empty")


def test_init_from_starts_at_the_saved_weights(run_dir: Path, tmp_path: Path, capsys) -> None:
    model = bundle.load(run_dir)
    data = load_dataset(model.data)
    loop = Loop([model.config], data, device="cpu")
    loop.load_weights(0, model.weights)
    state = loop.members.member_state(0)
    assert all(torch.equal(state[k], model.weights[k]) for k in model.weights)
    # the command: the saved config and data are the defaults, --set changes them
    out = tmp_path / "again"
    assert main(["--init-from", str(run_dir), "--set", "max_steps=4", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0  # fmt: skip
    again = bundle.load(out)
    assert again.info["origin"]["init_from"] == str(run_dir)
    assert again.config.train.max_steps == 4 and again.config.params.num_filters == 8
    assert "Model in" in capsys.readouterr().out


def test_init_from_refuses_other_data_or_model(run_dir: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--init-from", str(run_dir), "--set", "data.max_vocab=5", "--set", "max_steps=1",
              "--device", "cpu", "--quiet", "--out", str(run_dir / "x")])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its vocabulary differs" in err
    args = build_parser().parse_args(["--init-from", str(run_dir), "--model", "DPCNN"])
    with pytest.raises(UserError, match="holds a TextCNN"):
        resolve_run(args, bundle.load(run_dir))


def test_replay_of_a_run_folder_reuses_its_config(run_dir: Path) -> None:
    cfg, spec = resolve_run(build_parser().parse_args(["--replay", str(run_dir)]))
    model = bundle.load(run_dir)
    assert cfg == model.config and spec == model.data
    with pytest.raises(UserError, match="not a sweep's results folder"):
        resolve_run(build_parser().parse_args(["--replay", str(run_dir), "--trial", "3"]))


def test_data_spec_round_trips(run_dir: Path) -> None:
    spec = bundle.load(run_dir).data
    assert isinstance(spec, DataSpec) and spec.pad_size == 16 and spec.name == "thucnews"


def _edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / bundle.META).read_text(encoding="utf-8"))
    change(meta)
    (folder / bundle.META).write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("embed", 10**9, r"'embedding\.weight' is \[\d+, 16\], .* make it \[\d+, 1000000000\]"),
        ("num_filters", 10**8, r"tensor 'convs\.0\.weight' is \[8, 16, 2\], .*\[100000000, "),
        ("data.pad_size", 10**9, r"data\.pad_size: at most 8192 tokens per text, got 1000000000"),
    ],
)  # fmt: skip
def test_claimed_sizes_are_checked_against_the_weights_before_anything_is_built(
    run_dir: Path, tmp_path: Path, key: str, value: int, message: str
) -> None:
    """model.json's sizes meet the safetensors header's shapes (the model built on the meta
    device) before any allocation: a bigger claim is one line naming the tensor, not GBs
    (test_predict runs the command under a memory limit)."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    if key.startswith("data."):
        _edit_meta(bad, lambda m: m["data"].update({key[5:]: value}))
    else:
        _edit_meta(bad, lambda m: m["config"].update({key: value}))
    for read in (bundle.load, bundle.settings):  # predict / --init-from, and --replay
        with pytest.raises(UserError, match=message):
            read(bad)


def test_a_saved_model_chooses_no_place_to_write_and_names_each_class_once(
    run_dir: Path, tmp_path: Path
) -> None:
    import shutil

    elsewhere = tmp_path / "not-here"
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    _edit_meta(bad, lambda m: m["data"].update({"cache_dir": str(elsewhere)}))
    assert bundle.load(bad).data.cache_dir is None  # this machine's cache, not the file's
    out = tmp_path / "again"
    assert main(["--init-from", str(bad), "--set", "max_steps=2", "--device", "cpu", "--quiet",
                 "--no-tensorboard", "--out", str(out)]) == 0  # fmt: skip
    assert not elsewhere.exists()
    _edit_meta(bad, lambda m: m.update({"classes": ["yin", "yin"]}))
    with pytest.raises(UserError, match=r"model\.json: classes: 'yin' named twice"):
        bundle.load(bad)
    model = bundle.load(run_dir)
    data = load_dataset(model.data)
    object.__setattr__(data, "classes", ("yin", "yin"))
    with pytest.raises(UserError, match="named twice"):
        bundle.save(tmp_path / "dup", model.config, model.data, data, model.weights)
    assert not (tmp_path / "dup").exists()
