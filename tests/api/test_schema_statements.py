"""The OpenAPI document states the rules the server enforces, and the server enforces what the
document states (what Schemathesis found, issue 11, point 2)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.api.api import api
from apps.runs.models import Run
from tests.api.conftest import pointers, problem, signed_in

pytestmark = pytest.mark.django_db


def component(name: str) -> dict:
    return api.get_openapi_schema()["components"]["schemas"][name]


def test_the_schema_says_a_workflow_has_at_least_one_node():
    assert component("WorkflowSpec")["properties"]["nodes"]["minItems"] == 1


def test_the_schema_states_the_cost_limit_as_the_server_reads_it():
    options = component("Budget")["properties"]["max_cost"]["anyOf"]
    assert {"type": "number", "minimum": 0, "maximum": 9999999.99999999} in options
    assert {"type": "string", "pattern": r"^[0-9]{1,7}(\.[0-9]{1,8})?$"} in options


def test_every_operation_documents_its_422():
    for path, operations in api.get_openapi_schema()["paths"].items():
        for method, operation in operations.items():
            assert "422" in {str(status) for status in operation["responses"]}, f"{method.upper()} {path}"


@pytest.mark.parametrize("max_cost", ["1e3", " 5", "", "-1", "0.123456789"])
def test_a_cost_limit_not_written_as_the_schema_says_is_refused(operator, version, max_cost):
    body = problem(signed_in(operator).post_json("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "x"}, "budget": {"max_cost": max_cost}}), 422)
    assert pointers(body) == ["/budget/max_cost"]


def test_a_cost_limit_as_a_json_number_is_taken_to_8_places(operator, version):
    response = signed_in(operator).post_json("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "x"}, "budget": {"max_cost": 3259141.941633136}})
    assert response.status_code == 201, response.content
    assert Run.objects.get().budget_cost == Decimal("3259141.94163314")


@pytest.mark.parametrize("until", ["0", "1700000000", "yesterday"])
def test_a_date_that_is_not_yyyy_mm_dd_is_refused(operator, until):
    body = problem(signed_in(operator).get(f"/api/v1/costs?until={until}"), 422)
    assert [e["parameter"] for e in body["errors"]] == ["until"]


def test_validating_a_text_with_an_unprintable_character_reports_it(admin):
    response = signed_in(admin).post("/api/v1/workflows/validate", "name: x\x99\n".encode(), content_type="text/plain")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["valid"] is False
    assert "unacceptable character" in body["problems"][0]["detail"]


@pytest.mark.parametrize("max_cost", ["0.00000001", "0", "9999999.99999999", 0.0000001])
def test_a_cost_limit_reads_back_as_it_was_dumped(operator, version, max_cost):
    # a run's options and a definition hold the budget as dumped: "1E-8" would not read back
    response = signed_in(operator).post_json("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "x"}, "budget": {"max_cost": max_cost}})
    assert response.status_code == 201, response.content
    assert Run.objects.get().budget_cost == Decimal(str(max_cost))


def test_a_definition_with_a_tiny_cost_limit_round_trips():
    from apps.engine import definition
    from tests.factories import definition as a_definition

    plan = definition.load(a_definition(budget={"max_cost": "0.00000001"}))
    assert definition.load(definition.dump(plan.spec)).spec == plan.spec
    assert definition.dump(plan.spec)["budget"]["max_cost"] == "0.00000001"
