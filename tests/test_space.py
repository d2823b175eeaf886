"""ParamSpec -> Optuna: distributions, define-by-run sampling, list choices, grids, samplers."""

import json
import math
import pickle

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from harness import space
from harness.space import ParamSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

PARAMS = {
    "learning_rate": ParamSpec("learning_rate", "log_uniform_values", min=1e-4, max=1e-2),
    "dropout": ParamSpec("dropout", "uniform", min=0.1, max=0.6),
    "momentum": ParamSpec("momentum", "q_uniform", min=0.5, max=0.95, q=0.05),
    "num_layers": ParamSpec("num_layers", "int_uniform", min=1, max=3, integer=True),
    "num_filters": ParamSpec("num_filters", "q_uniform", min=64, max=256, q=64, integer=True),
    "batch_size": ParamSpec(
        "batch_size", "q_log_uniform_values", min=32, max=256, q=8, integer=True
    ),
    "gamma": ParamSpec("gamma", "q_log_uniform_values", min=0.5, max=0.99, q=0.01),
    "embed": ParamSpec("embed", "log_uniform_values", min=16, max=512, integer=True),
    "filter_sizes": ParamSpec("filter_sizes", "categorical", values=((2, 3, 4), (3, 4, 5), (2,))),
    "optimizer": ParamSpec("optimizer", "categorical", values=("adam", "sgd")),
    "embedding_path": ParamSpec("embedding_path", "categorical", values=(None, "/e.npz")),
    "shuffle": ParamSpec("shuffle", "categorical", values=(True, False)),
    "seed": ParamSpec("seed", "constant", value=7),
}


def test_distributions():
    d = space.optuna_space(PARAMS)
    assert d["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["dropout"] == FloatDistribution(0.1, 0.6)
    assert d["momentum"] == FloatDistribution(0.5, 0.95, step=0.05)
    assert d["num_layers"] == IntDistribution(1, 3)
    assert d["num_filters"] == IntDistribution(64, 256, step=64)
    assert d["embed"] == IntDistribution(16, 512, log=True)
    assert d["batch_size"] == IntDistribution(32, 256, log=True)  # snapped to q after sampling
    assert d["gamma"] == FloatDistribution(0.5, 0.99, log=True)
    assert d["filter_sizes"] == CategoricalDistribution(["[2, 3, 4]", "[3, 4, 5]", "[2]"])
    assert d["embedding_path"] == CategoricalDistribution([None, "/e.npz"])
    assert "seed" not in d  # constants are not Optuna's business


def test_q_uniform_follows_wandb_rounding():
    # W&B: round(x / q) * q for x in [min, max] -> multiples of q, not min + k*q
    p = ParamSpec("dropout", "q_uniform", min=0.12, max=0.58, q=0.1)
    assert p.bounds() == (0.1, 0.6)
    assert p.grid_values() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    # q_log_uniform_values keeps to the multiples of q inside [min, max]
    assert ParamSpec("b", "q_log_uniform_values", min=30, max=250, q=8, integer=True).bounds() == (
        32,
        248,
    )


@pytest.mark.parametrize("value", [[2, 3, 4], [3, 4, 5], [2], "adam", None, True, False, 0, 1.5])
def test_list_choices_round_trip(value):
    p = ParamSpec("x", "categorical", values=(space.freeze(value), "other"))
    raw = p.encode(value)
    assert raw in p.optuna().choices
    assert isinstance(raw, (type(None), bool, int, float, str))
    back = p.decode(raw)
    assert back == value and type(back) is type(value)


def test_list_choices_are_readable_and_decode_to_fresh_lists():
    p = PARAMS["filter_sizes"]
    assert p.encode([2, 3, 4]) == "[2, 3, 4]"
    a, b = p.decode("[2, 3, 4]"), p.decode("[2, 3, 4]")
    assert a == [2, 3, 4] and a is not b
    a.append(9)
    assert p.decode("[2, 3, 4]") == [2, 3, 4]
    assert space.decode(PARAMS, {"filter_sizes": "[3, 4, 5]"})["filter_sizes"] == [3, 4, 5]


def test_true_and_one_stay_apart():
    p = ParamSpec("x", "categorical", values=(1, True))
    assert p.decode(True) is True and p.decode(1) == 1 and p.decode(1) is not True
    assert p.nearest(True) is True


def _check_bounds(values):
    assert 1e-4 <= values["learning_rate"] <= 1e-2
    assert 0.1 <= values["dropout"] <= 0.6
    m = values["momentum"]
    assert 0.5 <= m <= 0.95 and math.isclose(round(m / 0.05) * 0.05, m) and m == round(m, 10)
    assert values["num_layers"] in (1, 2, 3)
    assert values["num_filters"] in (64, 128, 192, 256)
    b = values["batch_size"]
    assert isinstance(b, int) and 32 <= b <= 256 and b % 8 == 0
    g = values["gamma"]
    assert 0.5 <= g <= 0.99 and math.isclose(round(g / 0.01) * 0.01, g)
    assert isinstance(values["embed"], int) and 16 <= values["embed"] <= 512
    assert values["filter_sizes"] in ([2, 3, 4], [3, 4, 5], [2])
    assert values["optimizer"] in ("adam", "sgd")
    assert values["embedding_path"] in (None, "/e.npz")
    assert values["shuffle"] in (True, False)
    assert values["seed"] == 7


def test_real_study_samples_within_bounds():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0,
                                n_startup_trials=5))  # fmt: skip
    seen = []

    def objective(trial):
        values = space.suggest(trial, PARAMS)
        _check_bounds(values)
        seen.append(values)
        return values["dropout"] + len(values["filter_sizes"])

    study.optimize(objective, n_trials=20)
    assert len(seen) == 20
    assert {len(v["filter_sizes"]) for v in seen} >= {1, 3}  # TPE explores the list choices
    # what Optuna stored decodes to what the trial got
    for trial, values in zip(study.trials, seen):
        assert space.decode(PARAMS, trial.params) == values


def test_define_by_run_is_picklable_and_samples():
    fn = pickle.loads(pickle.dumps(space.define_by_run(PARAMS)))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    _check_bounds(fn(trial))


def test_enqueued_baseline_comes_back_unchanged():
    baseline = {"learning_rate": 1e-3, "dropout": 0.5, "momentum": 0.9, "num_layers": 2,
                "num_filters": 256, "batch_size": 128, "gamma": 0.9, "embed": 300,
                "filter_sizes": [2, 3, 4], "optimizer": "adam", "embedding_path": None,
                "shuffle": True}  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial(space.encode(PARAMS, baseline))
    got = space.suggest(study.ask(), PARAMS)
    assert got == {**baseline, "seed": 7}


def test_nearest_moves_values_into_the_space():
    assert PARAMS["dropout"].nearest(0.9) == 0.6
    assert PARAMS["num_filters"].nearest(100) == 128
    assert PARAMS["batch_size"].nearest(1000) == 256
    assert PARAMS["momentum"].nearest(0.93) == 0.95
    nf = ParamSpec("num_filters", "categorical", values=(64, 128, 512))
    assert nf.nearest(256) == 128 and nf.nearest(128) == 128
    assert PARAMS["filter_sizes"].nearest([7, 8]) == [2, 3, 4]  # not numeric: first choice
    assert PARAMS["filter_sizes"].nearest((3, 4, 5)) == [3, 4, 5]


def test_grid_is_every_finite_combination():
    params = {
        "num_layers": PARAMS["num_layers"],
        "num_filters": PARAMS["num_filters"],
        "filter_sizes": PARAMS["filter_sizes"],
        "seed": PARAMS["seed"],
    }
    g = space.grid(params)
    assert g == {"num_layers": [1, 2, 3], "num_filters": [64, 128, 192, 256],
                 "filter_sizes": ["[2, 3, 4]", "[3, 4, 5]", "[2]"]}  # fmt: skip
    assert space.grid_size(params) == 36
    study = optuna.create_study(sampler=space.sampler("grid", 0, params, 36))
    points = set()
    for _ in range(36):
        trial = study.ask()
        v = space.suggest(trial, params)
        points.add((v["num_layers"], v["num_filters"], tuple(v["filter_sizes"])))
        study.tell(trial, 0.0)
    assert len(points) == 36
    with pytest.raises(ValueError, match="no finite grid"):
        PARAMS["dropout"].grid_values()


@pytest.mark.parametrize("method", ["auto", "tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2"])
def test_every_method_has_a_sampler_that_runs(method):
    if method == "cmaes":
        pytest.importorskip("cmaes")  # optional: config says "pip install cmaes" when missing
    params = {
        "learning_rate": PARAMS["learning_rate"] if method != "grid" else PARAMS["num_layers"],
        "num_filters": PARAMS["num_filters"],
        "filter_sizes": PARAMS["filter_sizes"],
    }
    sampler = space.sampler(method, 0, params, 8)
    kw = {"directions": ["maximize", "minimize"]} if method == "nsga2" else {}
    study = optuna.create_study(sampler=sampler, **kw)
    for _ in range(3):
        trial = study.ask()
        v = space.suggest(trial, params)
        study.tell(trial, [1.0, 2.0] if method == "nsga2" else float(v["num_filters"]))
    assert len(study.trials) == 3


def test_to_dict_is_wandb_form():
    assert PARAMS["momentum"].to_dict() == {"distribution": "q_uniform", "min": 0.5, "max": 0.95,
                                            "q": 0.05}  # fmt: skip
    assert PARAMS["filter_sizes"].to_dict() == {
        "distribution": "categorical", "values": [[2, 3, 4], [3, 4, 5], [2]]}  # fmt: skip
    assert PARAMS["seed"].to_dict() == {"distribution": "constant", "value": 7}


# ------------------------------------------------------------------------ method: auto

CONTINUOUS = {  # two log/linear ranges, a wide integer range, one choice
    "learning_rate": PARAMS["learning_rate"],
    "dropout": PARAMS["dropout"],
    "hidden_size": ParamSpec("hidden_size", "int_uniform", min=32, max=512, integer=True),
    "filter_sizes": PARAMS["filter_sizes"],
}
CATEGORICAL = {  # thucnews_textcnn.yaml's space: 2 ranges, 3 choice lists
    "learning_rate": PARAMS["learning_rate"],
    "dropout": PARAMS["dropout"],
    "num_filters": ParamSpec("num_filters", "categorical", values=(128, 256, 384)),
    "filter_sizes": PARAMS["filter_sizes"],
    "weight_decay": ParamSpec("weight_decay", "categorical", values=(0.0, 1e-5, 1e-4)),
}


def test_auto_picks_gp_for_a_small_budget_over_mostly_continuous_parameters():
    c = space.choose(CONTINUOUS, 16)
    assert c.method == "gp" and c.startup == 5 and c.prior_draws == 4
    assert "3 of 4 parameters continuous" in c.why and "no early termination" in c.why
    assert isinstance(c.sampler(0, 16), optuna.samplers.GPSampler)
    assert c.sampler(0, 16)._n_startup_trials == 5
    assert space.continuous(CONTINUOUS["hidden_size"])
    assert not space.continuous(PARAMS["num_layers"])  # 1..3: three values, a choice really
    assert not space.continuous(PARAMS["num_filters"])  # 64..256 by 64: four values


def test_auto_picks_multivariate_tpe_otherwise():
    cases = {
        "categorical-heavy": (CATEGORICAL, 16, False, "2 of 5 parameters continuous"),
        "early termination": (CONTINUOUS, 16, True, "early termination prunes trials"),
        "a large budget": (CONTINUOUS, 200, False, "past the GP's budget (100)"),
    }
    for case, (params, n, pruning, why) in cases.items():
        c = space.choose(params, n, pruning=pruning)
        assert c.method == "tpe" and why in c.why, (case, c)
        sampler = c.sampler(0, n)
        assert isinstance(sampler, optuna.samplers.TPESampler), case
        assert sampler._multivariate and sampler._group and sampler._constant_liar, case
        assert sampler._n_startup_trials == space.startup_trials(n), case
    assert space.choose(CONTINUOUS, 200).prior_draws == space.PRIOR_DRAWS  # a few, not all


def test_auto_bounds_tpes_history_past_a_thousand_trials():
    from harness.history import BoundedHistory

    small, large = space.choose(CATEGORICAL, space.HISTORY), space.choose(CATEGORICAL, 5000)
    assert small.history == 0 and isinstance(small.sampler(0, 500), optuna.samplers.TPESampler)
    assert large.method == "tpe" and large.history == space.HISTORY
    sampler = large.sampler(0, 5000)
    assert isinstance(sampler, BoundedHistory) and sampler.history == space.HISTORY
    assert isinstance(sampler.base, optuna.samplers.TPESampler) and sampler.base._group
    assert "over its best 25 and latest 500 trials" in large.describe()
    assert space.Choice.from_dict(json.loads(json.dumps(large.to_dict()))) == large
    old = {k: v for k, v in large.to_dict().items() if k != "history"}  # an older sweep.json
    assert space.Choice.from_dict(old).history == 0


def test_auto_picks_nsga2_for_several_objectives():
    c = space.choose(CONTINUOUS, 24, objectives=2)
    assert c.method == "nsga2" and c.prior_draws == 0 and "2 objectives" in c.why
    assert isinstance(c.sampler(0, 24), optuna.samplers.NSGAIISampler)
    assert c.describe() == "auto chose NSGA-II, population 8: " + c.why


def test_auto_names_its_choice_and_round_trips_through_json():
    c = space.choose(CATEGORICAL, 16, pruning=True)
    text = c.describe()
    assert text.startswith("auto chose TPE, multivariate + group, constant liar, 5 start-up")
    assert "the baseline and 4 drawn around the classic values" in text and c.why in text
    assert space.Choice.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert space.choose(CATEGORICAL, 16, prior=False).prior_draws == 0  # baseline off: none


def test_prior_points_spread_around_the_classic_values():
    center = {"learning_rate": 1e-3, "dropout": 0.5, "num_filters": 256,
              "filter_sizes": [2, 3, 4], "weight_decay": 0.0}  # fmt: skip
    pts = space.prior_points(CATEGORICAL, center, 4, seed=0)
    assert pts == space.prior_points(CATEGORICAL, center, 4, seed=0)  # seeded
    assert pts != space.prior_points(CATEGORICAL, center, 4, seed=1)
    keys = {json.dumps(p, sort_keys=True) for p in pts}
    assert len(keys) == 4 and json.dumps(center, sort_keys=True) not in keys  # all new trials
    lrs = sorted(p["learning_rate"] for p in pts)
    assert lrs[0] < 1e-3 < lrs[-1]  # both sides of the centre, not a cluster
    assert all(1e-3 / 4 < x < 1e-3 * 4 for x in lrs)  # within the prior's middle 90%
    for p in pts:
        for name, spec in CATEGORICAL.items():
            assert spec.optuna()._contains(spec.optuna().to_internal_repr(spec.encode(p[name])))
    edge = {"learning_rate": PARAMS["learning_rate"]}  # the centre on the range's edge
    pts = space.prior_points(edge, {"learning_rate": 1e-4}, 4, 0)
    assert all(p["learning_rate"] > 1e-4 for p in pts)  # mirrored into the range, not clipped
