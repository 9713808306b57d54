"""Operations on the run page: cancel, retry a failed run, preview and start a re-run from a node.

Offered to operators and admins only, and only when they apply; they post over htmx with the
CSRF header the page carries; refusals show inline; the preview is escaped like everything else.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from apps.runs.models import NodeRun, Run, RunStatus

from .helpers import finish, signed_in, start

HTMX = {"HX-Request": "true"}
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def page(client: Client, run: Run) -> str:
    response = client.get(reverse("console:run", args=[run.id]))
    assert response.status_code == 200
    return response.content.decode()


def action(name: str, run: Run) -> str:
    return reverse(f"console:{name}", args=[run.id])


@pytest.fixture
def done(chain_version, operator) -> Run:
    """A succeeded ``chain`` run (measure -> answer) with tokens recorded for its llm node."""
    run = finish(start(chain_version, operator), output={"words": 2}, model="sim-fast")
    NodeRun.objects.filter(run=run, node_id="answer").update(tokens_in=1200, tokens_out=300)
    return run


# --- what is offered, to whom ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_an_active_run_offers_cancel_with_a_confirmation(request, version, role):
    run = start(version)
    html = page(signed_in(request.getfixturevalue(role)), run)

    assert f'hx-post="{action("run_cancel", run)}"' in html
    assert f'hx-confirm="Cancel run {str(run.id)[:8]}?' in html
    assert action("run_retry", run) not in html
    assert f'hx-get="{action("run_rerun_preview", run)}"' in html


def test_a_failed_run_offers_retry_and_no_cancel(version, operator_client):
    run = finish(start(version), RunStatus.FAILED)
    html = page(operator_client, run)

    assert f'hx-post="{action("run_retry", run)}"' in html
    assert action("run_cancel", run) not in html


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.CANCELLED])
def test_a_run_that_did_not_fail_offers_only_the_rerun(version, operator_client, status):
    run = finish(start(version), status)
    html = page(operator_client, run)

    assert action("run_cancel", run) not in html
    assert action("run_retry", run) not in html
    assert action("run_rerun_preview", run) in html
    assert '<option value="answer">answer</option>' in html


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.FAILED])
def test_a_reviewer_is_offered_no_operation(version, reviewer, status):
    run = start(version) if status == RunStatus.RUNNING else finish(start(version), status)
    html = page(signed_in(reviewer), run)

    for name in ("run_cancel", "run_retry", "run_rerun_preview", "run_rerun"):
        assert action(name, run) not in html
    assert 'id="run-actions"' not in html


def test_the_polled_table_keeps_the_actions_current_for_operators_only(version, operator_client, reviewer):
    run = start(version)
    url = reverse("console:run_nodes", args=[run.id])

    assert 'id="run-actions" class="run-actions" hx-swap-oob="true"' in operator_client.get(url, headers=HTMX).content.decode()
    assert 'id="run-actions"' not in signed_in(reviewer).get(url, headers=HTMX).content.decode()


# --- cancel and retry --------------------------------------------------------------------------------


def test_cancel_over_htmx_swaps_in_the_cancelled_run(version, operator, operator_client):
    run = start(version)

    response = operator_client.post(action("run_cancel", run), headers=HTMX)

    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="run-actions"')
    assert '<div id="node-table" hx-swap-oob="true">' in body  # no longer polling
    assert 'id="run-summary" class="run-summary" hx-swap-oob="true"' in body
    assert "cancelled by otto-operator" in body
    assert "hx-trigger" not in body
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    assert run.events.get(kind="run_cancelled").data == {"by": operator.username}


def test_cancel_without_htmx_goes_back_to_the_run_page(version, operator_client):
    run = start(version)

    response = operator_client.post(action("run_cancel", run))

    assert response.status_code == 302
    assert response["Location"] == reverse("console:run", args=[run.id])
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_cancelling_a_finished_run_says_so_inline(version, operator_client):
    run = finish(start(version))

    over_htmx = operator_client.post(action("run_cancel", run), headers=HTMX)
    without = operator_client.post(action("run_cancel", run))

    assert over_htmx.status_code == 200  # htmx swaps only successful answers in
    assert "Not done: the run is already over (succeeded)" in over_htmx.content.decode()
    assert 'role="alert"' in over_htmx.content.decode()
    assert without.status_code == 409
    assert "Not done: the run is already over (succeeded)" in without.content.decode()
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_retry_over_htmx_restarts_the_polling(version, operator_client):
    run = finish(start(version), RunStatus.FAILED)

    response = operator_client.post(action("run_retry", run), headers=HTMX)

    assert response.status_code == 200
    body = response.content.decode()
    assert 'hx-trigger="every 1s"' in body  # the swapped-in node table polls again
    assert action("run_cancel", run) in body  # and the run can be cancelled again
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert dict(run.node_runs.values_list("node_id", "status")) == {"answer": "queued"}


def test_retrying_a_run_that_did_not_fail_says_so_inline(version, operator_client):
    run = start(version)
    body = operator_client.post(action("run_retry", run), headers=HTMX).content.decode()
    assert "Not done: the run is running: only a failed run can be retried" in body


def test_the_posts_work_with_the_csrf_header_the_page_carries(version, operator):
    run = start(version)
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page(client, run)).group(1)

    assert client.post(action("run_cancel", run), headers=HTMX).status_code == 403
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING
    assert client.post(action("run_cancel", run), headers={**HTMX, "X-CSRFToken": token}).status_code == 200
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED


# --- re-run from a node --------------------------------------------------------------------------------


def test_the_preview_shows_what_executes_again_what_is_reused_and_the_cost(done, operator_client):
    response = operator_client.get(action("run_rerun_preview", done), {"node": "answer"}, headers=HTMX)

    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="rerun-preview"')
    assert "1 node executes again" in body
    assert "1 node is reused" in body
    assert '<th scope="row"><code>answer</code></th>' in body
    assert "1,200 / 300" in body
    assert "Estimated cost: <strong>$0.000360</strong>" in body  # 1,200 in and 300 out at sim-fast prices
    assert "Reused: <code>measure</code>" in body
    assert f'hx-post="{action("run_rerun", done)}"' in body
    assert '<input type="hidden" name="node" value="answer">' in body


def test_the_preview_without_htmx_is_the_run_page_showing_it(done, operator_client):
    response = operator_client.get(action("run_rerun_preview", done), {"node": "measure"})

    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html
    assert "2 nodes execute again" in html
    assert '<option value="measure" selected>' in html
    assert '<section id="node-detail" class="panel" aria-live="polite" hidden>' in html  # ?node= chose no node panel


def test_the_preview_is_escaped(done, operator_client):
    NodeRun.objects.filter(run=done, node_id="answer").update(model=IMG)  # the model name a provider answered with

    preview = operator_client.get(action("run_rerun_preview", done), {"node": "answer"}, headers=HTMX).content.decode()
    unknown = operator_client.get(action("run_rerun_preview", done), {"node": SCRIPT}, headers=HTMX).content.decode()

    assert IMG not in preview
    assert "&lt;img src=x onerror=alert(1)&gt;" in preview
    assert SCRIPT not in unknown
    assert "no node &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;" in unknown


def test_an_unknown_node_is_refused_inline(done, operator_client):
    over_htmx = operator_client.post(action("run_rerun", done), {"node": "nowhere"}, headers=HTMX)
    without = operator_client.post(action("run_rerun", done), {"node": "nowhere"})
    empty = operator_client.get(action("run_rerun_preview", done), headers=HTMX)

    assert over_htmx.status_code == 200
    assert "has no node &#x27;nowhere&#x27;" in over_htmx.content.decode()
    assert without.status_code == 422
    assert "Choose the node to re-run from." in empty.content.decode()
    assert Run.objects.count() == 1


def test_starting_the_rerun_over_htmx_goes_to_the_new_run(done, operator, operator_client):
    response = operator_client.post(action("run_rerun", done), {"node": "answer"}, headers=HTMX)

    new = Run.objects.exclude(pk=done.pk).get()
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("console:run", args=[new.id])
    assert (new.rerun_of_id, new.rerun_from_node, new.started_by) == (done.id, "answer", operator)
    html = page(operator_client, new)
    assert f'href="{reverse("console:run", args=[done.id])}"' in html  # "re-run of" links back
    assert html.count(">reused</span>") == 1  # measure; answer executes again


def test_starting_the_rerun_without_htmx_redirects_to_the_new_run(done, operator_client):
    response = operator_client.post(action("run_rerun", done), {"node": "measure"})

    new = Run.objects.exclude(pk=done.pk).get()
    assert response.status_code == 302
    assert response["Location"] == reverse("console:run", args=[new.id])
    assert dict(new.node_runs.values_list("node_id", "status")) == {"measure": "queued", "answer": "pending"}


# --- who may -------------------------------------------------------------------------------------------


@pytest.fixture
def operations(version, done) -> dict[str, tuple[str, str, dict]]:
    active, failed = start(version), finish(start(version), RunStatus.FAILED)
    return {
        "cancel": ("post", action("run_cancel", active), {}),
        "retry": ("post", action("run_retry", failed), {}),
        "preview": ("get", action("run_rerun_preview", done), {"node": "answer"}),
        "rerun": ("post", action("run_rerun", done), {"node": "answer"}),
    }


def snapshot() -> list[tuple]:
    return list(Run.objects.order_by("created_at").values_list("id", "status")) + list(NodeRun.objects.order_by("id").values_list("id", "status"))


@pytest.mark.parametrize("operation", ["cancel", "retry", "preview", "rerun"])
@pytest.mark.parametrize("role", ["reviewer", "outsider", "anonymous"])
def test_only_operators_and_admins_may_operate(request, operations, operation, role):
    method, url, data = operations[operation]
    client = Client() if role == "anonymous" else signed_in(request.getfixturevalue(role))
    before = snapshot()

    response = getattr(client, method)(url, data, headers=HTMX)

    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")
    else:
        assert response.status_code == 403
    assert snapshot() == before


@pytest.mark.parametrize("operation", ["cancel", "retry", "preview", "rerun"])
@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operators_and_admins_may_operate(request, operations, operation, role):
    method, url, data = operations[operation]
    response = getattr(signed_in(request.getfixturevalue(role)), method)(url, data, headers=HTMX)
    assert response.status_code == 200
    assert 'role="alert"' not in response.content.decode()


@pytest.mark.parametrize("name", ["run_cancel", "run_retry", "run_rerun"])
def test_operations_change_state_only_by_post(done, operator_client, name):
    assert operator_client.get(action(name, done)).status_code == 405
