"""The one coercer: what a file or a --set gives -> a field's type, or one Problem."""

import pytest

from harness.coercion import coerce, coerce_fields
from harness.data import DataSpec
from harness.errors import Problem, UserError


@pytest.mark.parametrize(
    ("value", "typ", "expected"),
    [
        ("1e-4", float, 1e-4),  # YAML 1.1 reads 1e-4 (no dot) as text
        (3, float, 3.0),
        (64.0, int, 64),
        ("8", int, 8),
        ("no", bool, False),
        ("3,4", tuple[int, ...], (3, 4)),
        ([2, 3], tuple[int, ...], (2, 3)),
        (None, int | None, None),
        ("x.npz", str | None, "x.npz"),
    ],
)
def test_values_are_converted_to_the_declared_type(value, typ, expected):
    got = coerce("name", value, typ)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("value", "typ", "rule"),
    [(1.5, int, "expected an integer"), (True, int, "expected an integer"),
     ("high", float, "expected a number"), ("nan", float, "expected a number"),
     ("maybe", bool, "expected true or false"), (3, str, "expected a string"),
     ([], tuple[int, ...], "expected a non-empty list")],
)  # fmt: skip
def test_a_wrong_value_is_one_problem_at_the_name(value, typ, rule):
    with pytest.raises(UserError) as err:
        coerce("data.pad_size", value, typ)
    assert err.value.problems == (Problem("data.pad_size", rule, value),)


def test_fields_of_a_dataclass_every_problem_at_once():
    kw, problems = coerce_fields(DataSpec, {"pad_size": "64", "pad_siz": 3, "seed": "x"}, "data")
    assert kw == {"pad_size": 64}
    assert [p.line() for p in problems] == [
        "data.pad_siz: unknown key (did you mean 'pad_size'?)",
        "data.seed: expected an integer, got 'x'",
    ]
