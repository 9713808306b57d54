"""Run inputs are checked against the workflow's input schema, with a pointer per problem."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from apps.engine import definition
from apps.engine.errors import InputError

SCHEMA = {
    "type": "object",
    "required": ["customer", "order"],
    "additionalProperties": False,
    "properties": {
        "customer": {"type": "string", "minLength": 1},
        "order": {
            "type": "object",
            "required": ["lines"],
            "properties": {
                "lines": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["sku", "qty"],
                        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                    },
                },
                "notes/extra": {"type": "string"},
            },
        },
        "plan": {"enum": ["free", "pro"]},
    },
}
GOOD = {"customer": "Ann", "order": {"lines": [{"sku": "A-1", "qty": 2}]}, "plan": "pro"}


def problems(value: Any) -> list[tuple[str, str]]:
    with pytest.raises(InputError) as caught:
        definition.validate_input(SCHEMA, value)
    return [(p.pointer, p.message) for p in caught.value.problems]


def test_valid_input_passes() -> None:
    assert definition.validate_input(SCHEMA, GOOD) is None


@pytest.mark.parametrize(
    ("value", "pointer", "fragment"),
    [
        pytest.param({**GOOD, "order": {"lines": [{"sku": "A-1", "qty": 0}]}}, "/order/lines/0/qty", "less than the minimum of 1", id="nested-array-item"),
        pytest.param({**GOOD, "order": {"lines": [{"sku": 5, "qty": 1}]}}, "/order/lines/0/sku", "is not of type 'string'", id="nested-type"),
        pytest.param({**GOOD, "order": {"lines": []}}, "/order/lines", "should be non-empty", id="empty-array"),
        pytest.param({**GOOD, "order": {"lines": [{"sku": "A"}]}}, "/order/lines/0", "'qty' is a required property", id="nested-required"),
        pytest.param({**GOOD, "order": {**GOOD["order"], "notes/extra": 1}}, "/order/notes~1extra", "is not of type 'string'", id="slash-in-key-escaped"),
        pytest.param({**GOOD, "plan": "gold"}, "/plan", "is not one of", id="enum"),
        pytest.param({"order": GOOD["order"]}, "", "'customer' is a required property", id="top-level-required"),
        pytest.param({**GOOD, "surprise": 1}, "", "Additional properties are not allowed", id="additional-property"),
        pytest.param("just text", "", "is not of type 'object'", id="not-an-object"),
    ],
)
def test_problem_points_at_the_bad_value(value: Any, pointer: str, fragment: str) -> None:
    [(found_pointer, message)] = problems(value)

    assert found_pointer == pointer
    assert fragment in message


def test_every_problem_is_reported_sorted_by_path() -> None:
    value = {"customer": "", "order": {"lines": [{"sku": "A", "qty": 0}, {"sku": 1, "qty": 1}]}, "plan": "gold"}

    assert [pointer for pointer, _ in problems(value)] == ["/customer", "/order/lines/0/qty", "/order/lines/1/sku", "/plan"]


def test_input_over_the_size_limit_is_refused_before_validation() -> None:
    value = {**GOOD, "customer": "x" * definition.MAX_INPUT_BYTES}

    [(pointer, message)] = problems(value)

    assert pointer == ""
    assert f"over the limit of {definition.MAX_INPUT_BYTES}" in message


def test_input_just_under_the_size_limit_passes() -> None:
    value = {"text": "x" * (definition.MAX_INPUT_BYTES - 20)}

    assert definition.validate_input({"type": "object"}, value) is None


@pytest.mark.parametrize(
    ("value", "pointer", "fragment"),
    [
        pytest.param({**GOOD, "order": {"lines": [{"sku": "A", "qty": float("nan")}]}}, "/order/lines/0/qty", "nan is not a JSON number", id="nan"),
        pytest.param({**GOOD, "customer": float("inf")}, "/customer", "inf is not a JSON number", id="infinity"),
        pytest.param({**GOOD, "when": datetime.date(2026, 1, 1)}, "/when", "date is not JSON data", id="date"),
        pytest.param({**GOOD, "tags": {"a", "b"}}, "/tags", "set is not JSON data", id="set"),
    ],
)
def test_input_that_is_not_json_data_is_refused(value: Any, pointer: str, fragment: str) -> None:
    [(found_pointer, message)] = problems(value)

    assert found_pointer == pointer
    assert fragment in message
