"""Problem records: formatted once into the one line a user reads, re-rooted without text."""

import pickle

from harness.errors import NOTHING, Problem, UserError, problems_of


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


def test_text_lines_of_older_checks_become_problems_at_known_paths():
    exc = UserError("num_heads: must divide embed=128, got 5\nsomething else: entirely")
    assert problems_of(exc, {"num_heads"}) == [
        Problem("num_heads", "must divide embed=128, got 5"),
        Problem("", "something else: entirely"),
    ]
