"""Signing in to the API: bearer tokens (and the command that issues them), and sessions with CSRF."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.api.models import ApiToken, hash_token
from apps.api.services import api_token_issue
from apps.runs.models import Run
from tests.api.conftest import ApiClient, problem, signed_in

pytestmark = pytest.mark.django_db

WORKFLOWS, RUNS = "/api/v1/workflows", "/api/v1/runs"
CSRF_TOKEN = "k" * 32
START = {"workflow": "tiny", "input": {"topic": "tides"}}


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def operator_token(operator) -> str:
    return api_token_issue(username=operator.username, name="ci")[1]


def test_a_valid_token_authenticates_its_user(version, operator_token):
    response = ApiClient().post_json(RUNS, START, **bearer(operator_token))
    assert response.status_code == 201
    assert response.json()["started_by"] == "otto-operator"


def test_a_token_needs_no_csrf_token(version, operator_token):
    client = ApiClient(enforce_csrf_checks=True)
    assert client.post_json(RUNS, START, **bearer(operator_token)).status_code == 201


def test_a_token_carries_its_users_role(version, reviewer):
    token = api_token_issue(username=reviewer.username)[1]
    problem(ApiClient().post_json(RUNS, START, **bearer(token)), 403)
    assert ApiClient().get(RUNS, **bearer(token)).status_code == 200


@pytest.mark.parametrize("token", ["dw_not-a-token-we-issued", "not even the right shape", ""])
def test_a_wrong_token_is_a_401_problem(db, token):
    response = ApiClient().get(WORKFLOWS, **bearer(token))
    problem(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_token_is_refused_even_beside_a_valid_session(admin):
    body = problem(signed_in(admin).get(WORKFLOWS, **bearer("dw_not-a-token-we-issued")), 401)
    assert body["detail"] == "the API token is not valid"


def test_no_credentials_at_all_is_a_401_problem(db):
    problem(ApiClient().get(WORKFLOWS), 401)


def test_the_token_of_a_deactivated_user_stops_working(operator, operator_token):
    operator.is_active = False
    operator.save()
    problem(ApiClient().get(WORKFLOWS, **bearer(operator_token)), 401)


def test_last_used_is_written_at_most_once_a_minute(operator, operator_token):
    token = ApiToken.objects.get(user=operator)
    assert token.last_used_at is None
    ApiClient().get(WORKFLOWS, **bearer(operator_token))
    first_use = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first_use is not None
    ApiClient().get(WORKFLOWS, **bearer(operator_token))
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first_use
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    ApiClient().get(WORKFLOWS, **bearer(operator_token))
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first_use


def test_the_command_prints_a_working_token_once_and_keeps_only_its_hash(operator):
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "otto-operator", "--name", "nightly import", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert token.startswith("dw_")
    stored = ApiToken.objects.get(user=operator)
    assert (stored.name, stored.key_hash) == ("nightly import", hash_token(token))
    assert token not in err.getvalue()
    assert not ApiToken.objects.filter(key_hash=token).exists()
    assert ApiClient().get(WORKFLOWS, **bearer(token)).status_code == 200


def test_the_command_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("create_api_token", "nobody", stdout=StringIO(), stderr=StringIO())


def session(user) -> ApiClient:
    client = signed_in(user, enforce_csrf_checks=True)
    client.cookies["csrftoken"] = CSRF_TOKEN
    return client


def test_a_session_reads_without_a_csrf_token(reviewer, version):
    assert session(reviewer).get(WORKFLOWS).status_code == 200


def test_a_session_post_without_the_csrf_token_is_a_403_problem(operator, version):
    body = problem(session(operator).post_json(RUNS, START), 403)
    assert "CSRF" in body["detail"]
    assert Run.objects.count() == 0


def test_a_session_post_with_the_csrf_token_is_accepted(operator, version):
    response = session(operator).post_json(RUNS, START, HTTP_X_CSRFTOKEN=CSRF_TOKEN)
    assert response.status_code == 201


def test_a_session_post_with_a_wrong_csrf_token_is_a_403_problem(operator, version):
    problem(session(operator).post_json(RUNS, START, HTTP_X_CSRFTOKEN="z" * 32), 403)


def test_an_anonymous_post_is_a_401_not_a_csrf_failure(version):
    problem(ApiClient(enforce_csrf_checks=True).post_json(RUNS, START), 401)
