"""Login throttling (django-axes): repeated failures for one user or from one client are refused,
with a message, for a cool-off period; admins see and reset lockouts; wrong API tokens count too."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import SESSION_KEY
from django.test import Client

from apps.api.services import api_token_issue
from orchestrator_site.logins import client_address
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 5  # DAGWRIGHT_LOGIN_FAILURE_LIMIT's default
RUNS = "/api/v1/runs"


def sign_in(username: str, password: str, *, address: str = "192.0.2.10", path: str = "/login/") -> tuple[Client, object]:
    client = Client(REMOTE_ADDR=address)
    return client, client.post(path, {"username": username, "password": password})


def fail(times: int, username: str, **where: str) -> list[int]:
    return [sign_in(username, "not-the-password", **where)[1].status_code for _ in range(times)]


def assert_refused(response) -> None:
    assert response.status_code == 429
    text = response.content.decode()
    assert "Sign-in refused for now" in text
    assert "Too many failed sign-ins (5) for this account or from this address. Try again in 15 minutes." in text
    assert 0 < int(response["Retry-After"]) <= 900


def test_after_the_limit_the_right_password_is_refused_with_a_message(operator):
    assert fail(LIMIT - 1, operator.username) == [200] * (LIMIT - 1)  # the form again, with its error
    assert fail(1, operator.username) == [429]  # the last failure allowed locks

    client, response = sign_in(operator.username, PASSWORD)

    assert_refused(response)
    assert SESSION_KEY not in client.session


def test_failures_for_one_user_lock_that_user_from_every_address(operator):
    fail(LIMIT, operator.username, address="192.0.2.10")

    assert_refused(sign_in(operator.username, PASSWORD, address="198.51.100.7")[1])


def test_failures_from_one_client_lock_that_client_for_every_user(operator):
    for n in range(LIMIT):
        fail(1, f"guess-{n}", address="192.0.2.10")

    assert_refused(sign_in(operator.username, PASSWORD, address="192.0.2.10")[1])
    assert sign_in(operator.username, PASSWORD, address="198.51.100.7")[1].status_code == 302  # signed in elsewhere


def test_a_success_before_the_limit_starts_the_count_again(operator):
    fail(LIMIT - 1, operator.username)
    assert sign_in(operator.username, PASSWORD)[1].status_code == 302

    assert fail(LIMIT - 1, operator.username) == [200] * (LIMIT - 1)


def test_after_the_cool_off_the_right_password_signs_in(operator):
    fail(LIMIT, operator.username)
    assert_refused(sign_in(operator.username, PASSWORD)[1])

    # fifteen minutes and a second later, as far as the recorded failures can tell
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(seconds=901))
    client, response = sign_in(operator.username, PASSWORD)

    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(operator.pk)


def test_retrying_while_locked_out_does_not_prolong_the_cool_off(operator):
    fail(LIMIT, operator.username)
    locked_at = AccessAttempt.objects.get().attempt_time

    fail(3, operator.username)

    assert AccessAttempt.objects.get().attempt_time == locked_at


def test_the_admin_login_is_throttled_too(admin):
    assert fail(LIMIT, admin.username, path="/admin/login/")[-1] == 429

    response = sign_in(admin.username, PASSWORD, path="/admin/login/")[1]

    assert_refused(response)
    assert 'href="/admin/login/"' in response.content.decode()


def test_an_admin_sees_the_lockout_and_lifts_it(operator, admin):
    fail(LIMIT, operator.username)
    staff = Client(REMOTE_ADDR="203.0.113.5")
    staff.force_login(admin)

    listing = staff.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200
    assert operator.username in listing.content.decode()

    attempt = AccessAttempt.objects.get(username=operator.username)
    done = staff.post("/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"})
    assert done.status_code == 302
    assert not AccessAttempt.objects.exists()

    assert sign_in(operator.username, PASSWORD)[1].status_code == 302


# --- API tokens ---------------------------------------------------------------------------------


def bearer(token: str, address: str = "192.0.2.10") -> Client:
    return Client(REMOTE_ADDR=address, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_wrong_tokens_from_one_client_are_refused_with_429_and_retry_after(operator):
    token = api_token_issue(username=operator.username)[1]

    statuses = [bearer(f"dw_guess-{n}").get(RUNS).status_code for n in range(LIMIT)]
    assert statuses == [401] * (LIMIT - 1) + [429]

    refused = bearer(token).get(RUNS)  # the right token too, from that client, until the cool-off has passed
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/problem+json"
    body = refused.json()
    assert (body["status"], body["title"]) == (429, "Too many failed attempts")
    assert "too many failed API token attempts from this address" in body["detail"]
    assert 0 < int(refused["Retry-After"]) <= 900

    assert bearer(token, address="198.51.100.7").get(RUNS).status_code == 200  # another client is not affected


def test_token_failures_are_an_access_attempt_an_admin_can_reset(operator):
    token = api_token_issue(username=operator.username)[1]
    for n in range(LIMIT):
        bearer(f"dw_guess-{n}").get(RUNS)

    attempt = AccessAttempt.objects.get()
    assert (attempt.username, attempt.ip_address, attempt.failures_since_start) == (None, "192.0.2.10", LIMIT)
    attempt.delete()  # what the admin's delete does

    assert bearer(token).get(RUNS).status_code == 200


def test_token_cool_off_passes(operator):
    token = api_token_issue(username=operator.username)[1]
    for n in range(LIMIT):
        bearer(f"dw_guess-{n}").get(RUNS)
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(seconds=901))

    assert bearer(token).get(RUNS).status_code == 200


def test_the_limit_and_the_cool_off_come_from_settings(operator, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)

    assert fail(2, operator.username) == [200, 429]
    response = sign_in(operator.username, PASSWORD)[1]
    assert "Try again in 1 minute." in response.content.decode()
    assert int(response["Retry-After"]) <= 60


# --- which client ------------------------------------------------------------------------------


def test_the_client_is_the_socket_peer_unless_proxies_are_trusted(rf, settings):
    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.10")

    settings.DAGWRIGHT_TRUSTED_PROXIES = 0
    assert client_address(request) == "10.0.0.2"  # a forged header counts for nothing
    settings.DAGWRIGHT_TRUSTED_PROXIES = 1
    assert client_address(request) == "192.0.2.10"  # what the one proxy saw; the left entry was the client's own


def test_the_api_schema_documents_the_429(client):
    operations = [operation for path in client.get("/api/openapi.json").json()["paths"].values() for operation in path.values()]

    assert operations
    assert all("429" in operation["responses"] for operation in operations)


@pytest.mark.parametrize("valid", [True, False], ids=["valid-token", "wrong-token"])
def test_the_throttle_never_reads_an_api_body(admin, valid):
    # a multipart type without a boundary cannot be parsed: the throttle must not try (it did, a 500)
    token = api_token_issue(username=admin.username)[1] if valid else "dw_guess"
    response = bearer(token).post("/api/v1/workflows", "name: x", content_type="multipart/form-data")
    assert 400 <= response.status_code < 500
    assert response["Content-Type"] == "application/problem+json"
    if not valid:
        assert AccessAttempt.objects.get().username is None  # counted against the client alone
