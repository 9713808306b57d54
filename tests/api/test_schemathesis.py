"""Schemathesis against /api/openapi.json, in process over WSGI, as an admin with a bearer token:
every operation with data made from its schema, valid and not, then chains of linked operations
(the stateful phase). No request may answer a server error, and the answers must match the
schema (every check). Bounded and derandomised: the same examples on every pass, in a few minutes
at most (issue 11, point 2)."""

from __future__ import annotations

import logging
import re

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks

from apps.api.services import api_token_issue
from apps.runs import services as run_services
from tests.factories import save_workflow

pytestmark = pytest.mark.django_db

EXAMPLES = 25
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


APP = get_wsgi_application()
# An invalid request may also be refused as too large (413): a body past the size limit. Every
# other check keeps its defaults (not_a_server_error: no 5xx, ever).
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]}}}
)
# Loaded with the module (the OpenAPI document reads no database): schemathesis's lazy loader,
# from_fixture, does not run under pytest 9 (it sets the item's private _nodeid).
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", APP, config=CONFIG)


@pytest.fixture(autouse=True)
def app_in_the_test_transaction(admin):
    # Django closes the database connection as a request starts and finishes; in a test that
    # connection holds the test's transaction. The test client keeps it open the same way.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    logging.getLogger("django.request").setLevel(logging.ERROR)  # thousands of 4xx lines otherwise; a 500 still logs
    version = save_workflow()  # ``tiny``, published, and a run of it: something for the operations to find
    run_services.run_start(workflow=version.workflow, input={"topic": "harbours"}, started_by=admin)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)
    logging.getLogger("django.request").setLevel(logging.NOTSET)


@pytest.fixture
def bearer(admin) -> dict[str, str]:
    _, token = api_token_issue(username=admin.get_username())
    return {"Authorization": f"Bearer {token}"}


# pydantic's own messages for what a JSON Schema states (types, ranges, lengths, patterns, required
# and unknown fields): a schema-valid request refused with one of them means the schema does not
# state a rule the server enforces.
SCHEMA_RULE = re.compile(
    r"^(node '[^']*': |node #\d+: )?(Input should|String should|List should|Value should|Decimal input should|Field required|Extra inputs)"
)


def refused_only_for_what_the_schema_cannot_say(ctx, response, case) -> None:
    """A schema-valid request may be refused only for what no JSON Schema states: a name that does
    not exist (unknown-reference), graph and cross-field rules (a router's default, a cycle), the
    workflow's own input schema, a review's state, a NUL character. Never with a 400, nor for a
    type, range, length or pattern: the schema states those."""
    if not case.meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return
    assert response.status_code != 400, f"a schema-valid request was refused with 400: {response.text}"
    schema_rules = [e for e in response.json().get("errors", []) if SCHEMA_RULE.match(e.get("detail", ""))]
    assert not schema_rules, f"a schema-valid request was refused for a rule the schema does not state: {schema_rules}"


# Built-in checks that cannot hold here, each for a reason schemathesis cannot know:
# - positive_data_acceptance counts every 422 as a refusal of valid data; the check above allows the
#   refusals no schema can state, and still fails on any other.
# - negative_data_rejection on the validate operation: its body is any text, and every value
#   schemathesis makes up for it is sent as text.
EXCLUDED = [checks.positive_data_acceptance]
EXCLUDED_FOR = {("POST", "/api/v1/workflows/validate"): [checks.negative_data_rejection]}


@schema.parametrize()
@SETTINGS
def test_every_operation_answers_as_its_schema_says(case, bearer):
    excluded = EXCLUDED + EXCLUDED_FOR.get((case.method.upper(), case.path), [])
    case.call_and_validate(headers=bearer, excluded_checks=excluded, additional_checks=[refused_only_for_what_the_schema_cannot_say])


def test_chains_of_linked_operations_answer_as_the_schema_says(bearer):
    """The stateful phase: a workflow saved, then read, published, run; a run started, then read,
    cancelled, retried; each step fed by the answers before it (links schemathesis infers)."""

    class LinkedOperations(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": bearer}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            excluded = EXCLUDED + EXCLUDED_FOR.get((case.method.upper(), case.path), [])
            case.validate_response(
                response,
                headers=bearer,
                excluded_checks=excluded,
                additional_checks=[refused_only_for_what_the_schema_cannot_say, *(additional_checks or [])],
                transport_kwargs=kwargs or None,
            )

    LinkedOperations.run(settings=settings(SETTINGS, max_examples=10, stateful_step_count=6))
