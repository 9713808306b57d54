"""Helpers for the API tests: clients signed in per role, and reading problem documents."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client

from apps.runs import services as run_services
from apps.runs.models import Run
from tests.factories import save_workflow

PROBLEM_TYPE = "application/problem+json"


class ApiClient(Client):
    """The Django test client, speaking JSON."""

    def post_json(self, path: str, body: Any, **extra: Any) -> HttpResponse:
        return self.post(path, body, content_type="application/json", **extra)


def signed_in(user: Any = None, **kwargs: Any) -> ApiClient:
    client = ApiClient(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


def problem(response: HttpResponse, status: int) -> dict[str, Any]:
    """The problem document of an error response, after checking its status and media type."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM_TYPE
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "errors"}
    assert body["status"] == status
    return body


def pointers(body: dict[str, Any]) -> list[str]:
    return [e["pointer"] for e in body["errors"]]


@pytest.fixture
def version(db):
    """The ``tiny`` workflow: one llm node fed by a required ``topic`` input."""
    return save_workflow()


@pytest.fixture
def run(version, operator) -> Run:
    return run_services.run_start(workflow=version.workflow, input={"topic": "harbours"}, started_by=operator)


@pytest.fixture
def anonymous(db) -> ApiClient:
    return signed_in()
