"""Integers past what a column holds are a 422 with the parameter or the pointer, never a 500
(SQLite's OverflowError past 64 bits); ``limit`` has a ceiling; and the OpenAPI document states
every bound the server enforces (issue 11, point 2)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.api.api import api
from apps.api.bounds import MAX_INT64, MAX_LIMIT
from apps.runs import services as run_services
from apps.runs.models import Run
from tests.api.conftest import problem, signed_in

pytestmark = pytest.mark.django_db

HUGE = 2**64


def _resolve(schema: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def unbounded_integers(schema: dict[str, Any]) -> list[str]:
    """Where an integer the API reads (a parameter, or in a request body) has no range within 64 bits."""
    found, seen = [], set()

    def walk(node: Any, where: str) -> None:
        node = _resolve(schema, node)
        if isinstance(node, dict):
            if id(node) in seen:
                return
            seen.add(id(node))
            if (
                node.get("type") == "integer"
                and "const" not in node
                and "enum" not in node
                and not (node.get("minimum", -(2**64)) >= -(2**63) and node.get("maximum", 2**64) <= MAX_INT64)
            ):
                found.append(where)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                walk(parameter["schema"], f"{method.upper()} {path} ?{parameter['name']}")
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                walk(content["schema"], f"{method.upper()} {path} body ({media})")
    return found


def test_every_integer_the_api_reads_has_a_64_bit_range_in_the_schema():
    assert unbounded_integers(api.get_openapi_schema()) == []


def test_the_schema_says_how_many_items_a_page_holds_at_most():
    parameters = api.get_openapi_schema()["paths"]["/api/v1/runs"]["get"]["parameters"]
    limit = next(p for p in parameters if p["name"] == "limit")
    assert limit["schema"]["maximum"] == MAX_LIMIT


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        (f"/api/v1/runs?offset={HUGE}", "offset"),
        (f"/api/v1/runs?limit={HUGE}", "limit"),
        (f"/api/v1/runs?limit={MAX_LIMIT + 1}", "limit"),
        (f"/api/v1/reviews?offset={HUGE}", "offset"),
        (f"/api/v1/reviews/{HUGE}", "review_id"),
        (f"/api/v1/workflows/tiny/versions/{HUGE}", "number"),
        (f"/api/v1/workflows/tiny/versions/1/diff/{HUGE}", "after"),
    ],
)
def test_a_huge_integer_parameter_is_a_422_naming_it(admin, version, path, parameter):
    body = problem(signed_in(admin).get(path), 422)
    assert [e["parameter"] for e in body["errors"]] == [parameter]


@pytest.mark.parametrize(
    ("path", "payload", "pointer"),
    [
        ("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "x"}, "version": HUGE}, "/version"),
        ("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "x"}, "budget": {"max_tokens": HUGE}}, "/budget/max_tokens"),
        ("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "x"}, "simulation": {"seed": HUGE}}, "/simulation/seed"),
        ("/api/v1/workflows/tiny/publish", {"version": HUGE}, "/version"),
        ("/api/v1/reviews/1/decision", {"decision": "approve", "version": HUGE}, "/version"),
        ("/api/v1/reviews/decisions", {"ids": [HUGE], "decision": "approve"}, "/ids/0"),
    ],
)
def test_a_huge_integer_in_a_body_is_a_422_at_its_pointer(admin, version, path, payload, pointer):
    body = problem(signed_in(admin).post_json(path, payload), 422)
    assert [e["pointer"] for e in body["errors"]] == [pointer]


def test_a_page_holds_at_most_the_limit_and_the_largest_offset_is_an_empty_page(operator, version):
    for _ in range(3):
        run_services.run_start(workflow=version.workflow, input={"topic": "x"}, started_by=operator)
    client = signed_in(operator)
    assert len(client.get("/api/v1/runs?limit=2").json()["items"]) == 2
    assert client.get(f"/api/v1/runs?limit={MAX_LIMIT}").json()["count"] == Run.objects.count()
    assert client.get("/api/v1/runs?offset=2147483647").json()["items"] == []
