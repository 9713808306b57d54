"""Every error the API gives is an RFC 9457 problem: malformed and oversized bodies, unknown paths,
wrong methods, and the unexpected, which is logged and never shows a stack trace.
Also: the OpenAPI document and the docs page are served, and document the problems."""

from __future__ import annotations

import json
import logging

import pytest

from apps.runs.models import Run
from apps.workflows.models import WorkflowVersion
from tests.api.conftest import PROBLEM_TYPE, pointers, problem, signed_in
from tests.factories import definition, tool_node

pytestmark = pytest.mark.django_db

WORKFLOWS, RUNS = "/api/v1/workflows", "/api/v1/runs"


@pytest.mark.parametrize("path", [WORKFLOWS, RUNS])
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('{"name": "tiny",', "Expecting property name"),
        (b'{"name": "\xff"}', "can't decode"),
        ('{"workflow": "tiny", "input": {"topic": NaN}}', "NaN is not a JSON number"),
        ('{"name": "tiny", "timeout": Infinity}', "Infinity is not a JSON number"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"input": ' + "[" * 101 + "]" * 101 + "}", "nested deeper than 100 levels"),
    ],
    ids=["cut short", "not utf-8", "NaN", "Infinity", "too deep to parse", "too deep to keep"],
)
def test_a_body_that_is_not_json_is_a_400_problem(admin, path, payload, reason):
    response = signed_in(admin).post(path, payload, content_type="application/json")
    body = problem(response, 400)
    assert body["detail"].startswith("the request body is not valid JSON: ")
    assert reason in body["detail"]
    assert WorkflowVersion.objects.count() == Run.objects.count() == 0


def test_a_definition_nested_deeper_than_the_engine_loads_is_refused(admin):
    args = {"text": "{{ input.topic }}", "deep": json.loads("[" * 99 + "]" * 99)}  # 103 levels into the body
    response = signed_in(admin).post_json(WORKFLOWS, definition(nodes=[tool_node("stats", args=args)]))
    assert "nested deeper than 100 levels" in problem(response, 400)["detail"]


@pytest.mark.parametrize("path", [WORKFLOWS, RUNS])
def test_an_empty_body_is_a_422_problem(admin, path):
    body = problem(signed_in(admin).post(path, "", content_type="application/json"), 422)
    assert body["errors"] == [{"pointer": "", "detail": "the request needs a JSON body"}]


def test_a_body_over_one_mebibyte_is_a_413_problem(operator, version):
    huge = {"workflow": "tiny", "input": {"topic": "x" * (1024 * 1024)}}
    body = problem(signed_in(operator).post_json(RUNS, huge), 413)
    assert body["detail"] == "the request body is over the limit of 1048576 bytes"
    assert Run.objects.count() == 0


def test_an_input_over_the_input_size_limit_is_a_422_problem(operator, version):
    body = problem(signed_in(operator).post_json(RUNS, {"workflow": "tiny", "input": {"topic": "x" * 300_000}}), 422)
    assert pointers(body) == ["/input"]
    assert "over the limit" in body["detail"]


@pytest.mark.parametrize("path", ["/api/v2/workflows", "/api/v1/nothing", "/api/", "/api/v1/runs/not-a-uuid"])
def test_an_unknown_path_is_a_404_problem(reviewer, path):
    assert problem(signed_in(reviewer).get(path), 404)["detail"] == f"nothing at {path}"


def test_a_wrong_method_is_a_405_problem_that_says_what_is_allowed(admin):
    response = signed_in(admin).delete(WORKFLOWS)
    assert "GET" in problem(response, 405)["detail"]
    assert set(response["Allow"].split(", ")) == {"GET", "POST"}


def test_an_unexpected_error_is_a_500_problem_that_is_logged_and_shows_no_trace(reviewer, version, caplog):
    # A stored version that no longer reads as a definition: the server's fault, not the caller's.
    WorkflowVersion.objects.filter(pk=version.pk).update(definition={"name": "tiny", "nodes": "corrupted-secret"})
    with caplog.at_level(logging.ERROR, logger="apps.api.problems"):
        response = signed_in(reviewer).get(f"{WORKFLOWS}/tiny/versions/1")
    body = problem(response, 500)
    assert body["detail"] == "an unexpected error happened; it has been logged"
    assert b"corrupted-secret" not in response.content
    assert b"Traceback" not in response.content
    assert any(record.exc_info and "GET /api/v1/workflows/tiny/versions/1" in record.getMessage() for record in caplog.records)


def test_the_openapi_document_describes_the_api(db):
    response = signed_in().get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert {"/api/v1/workflows", "/api/v1/workflows/{name}", "/api/v1/workflows/{name}/versions/{number}", "/api/v1/runs", "/api/v1/runs/{run_id}"} <= set(
        schema["paths"]
    )
    save = schema["paths"]["/api/v1/workflows"]["post"]
    assert save["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/WorkflowSpec"}
    assert set(save["responses"]["422"]["content"]) == {PROBLEM_TYPE}
    assert set(schema["components"]["securitySchemes"]) == {"ApiTokenAuth", "SessionCookieAuth"}
    assert schema["components"]["securitySchemes"]["ApiTokenAuth"] == {"type": "http", "scheme": "bearer"}


def test_the_docs_page_is_served(db):
    response = signed_in().get("/api/docs")
    assert response.status_code == 200
    assert b"/api/openapi.json" in response.content
