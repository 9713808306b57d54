"""The node panel: everything about one node of a run, from runs executed for real (in process,
with the simulated provider's fault injection): its rendered prompt, every attempt's raw
response, validation errors, tokens, cost, latency, the model used and those passed over, errors
with their class, the retry timeline, the idempotency key and input hash, and its events."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from django.utils.html import escape

from apps.console.templatetags.console import money
from apps.reviews.models import ReviewStatus
from apps.reviews.services import Decision, review_decide
from apps.runs.models import NodeRun, OutboxMessage, ProviderCall, Run, RunEvent, RunStatus
from apps.runs.services import run_start
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.reviews.helpers import start_gated_run
from tests.runs.helpers import drain

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue")]

HTMX = {"HX-Request": "true"}
TITLE = {"type": "object", "required": ["title"], "properties": {"title": {"type": "string"}}}
NO_WAIT = {"max_attempts": 4, "backoff_seconds": 0, "backoff_cap_seconds": 0}
# With this seed and these fault rates, the answer's attempt 1 meets a server error, attempt 2
# returns JSON that does not parse (repaired on the next attempt) and attempt 3 is valid.
SEED = 19
FAULTS = {"error_rate": 0.3, "malformed_rate": 0.3}


def panel(client, run: Run, node_id: str) -> str:
    response = client.get(reverse("console:node", args=[run.id, node_id]), headers=HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="node-detail"')
    return body


def pretty(raw: str) -> str:
    """A raw response as the panel prints it: indented JSON, escaped."""
    return escape(json.dumps(json.loads(raw), indent=2, ensure_ascii=False))


@pytest.fixture
def eventful_run() -> Run:
    """measure (tool) -> answer (llm: a model that does not exist, falling back to sim-fast; a
    server error, then an invalid answer, then a valid one) -> notify (the outbox tool)."""
    nodes = [
        tool_node("measure"),
        llm_node(
            "answer", "Write a title about {{ input.topic }}.", model="no-such-model", fallbacks=["sim-fast"],
            output_schema=TITLE, retry=NO_WAIT, depends_on=["measure"],
        ),
        tool_node("notify", tool="outbox", args={"topic": "titles", "payload": {"title": "{{ nodes.answer.title }}"}}, depends_on=["answer"]),
    ]  # fmt: skip
    version = save_workflow(definition("eventful", nodes), check_models=False)
    options = {"simulation": {"latency": "fixed:0", "seed": SEED, "faults": FAULTS}}
    run = drain(run_start(workflow=version.workflow, input={"topic": "harbour cranes"}, options=options))
    assert run.status == RunStatus.SUCCEEDED
    return run


def calls_of(run: Run, node_id: str) -> list[ProviderCall]:
    return list(ProviderCall.objects.filter(run=run, node_run__node_id=node_id).order_by("id"))


def test_the_run_really_retried_repaired_and_fell_back(eventful_run):
    """The premise of the tests below, checked on the rows rather than assumed."""
    first, second, third = calls_of(eventful_run, "answer")
    assert [(c.attempt, c.model, c.error_class) for c in (first, second, third)] == [
        (1, "sim-fast", "server_error"),
        (2, "sim-fast", "invalid_output"),
        (3, "sim-fast", ""),
    ]
    assert "Validation errors" in third.request["prompt"]  # attempt 3 repaired attempt 2's answer
    answer = NodeRun.objects.get(run=eventful_run, node_id="answer")
    assert answer.passed_over[0]["model"] == "no-such-model"


def test_the_panel_shows_the_rendered_prompt_the_model_used_and_the_fallbacks_passed_over(eventful_run, operator_client):
    answer = NodeRun.objects.get(run=eventful_run, node_id="answer")

    body = panel(operator_client, eventful_run, "answer")

    assert '<pre class="code" id="rendered-prompt">Write a title about harbour cranes.</pre>' in body
    assert '<code id="node-model">sim-fast</code>' in body
    [passed] = answer.passed_over
    assert f"<li><code>no-such-model</code>: {escape(passed['reason'])}</li>" in body
    assert "unknown_model" in passed["reason"]  # the why


def test_every_attempt_shows_its_raw_response_usage_latency_and_error(eventful_run, operator_client):
    body = panel(operator_client, eventful_run, "answer")

    first, second, third = calls_of(eventful_run, "answer")
    for call in (first, second, third):
        section = body[body.index(f'<article class="call" id="call-{call.pk}"') :]
        section = section[: section.index("</article>")]
        assert f"Attempt {call.attempt}: simulated / <code>sim-fast</code>" in section
        assert pretty(call.raw_response) in section  # every raw response, indented, escaped
        assert f"{call.tokens_in:,} / {call.tokens_out:,}" in section
        assert money(call.cost) in section
        assert f"{call.latency_ms:.0f} ms" in section
    errors = {call.pk: body[body.index(f'id="call-{call.pk}"') :].split("</article>")[0] for call in (first, second)}
    assert '<span class="tag tag-error">server_error</span>' in errors[first.pk]
    assert f'Error <code>server_error</code></strong>\n      <pre class="plain error-text">{escape(first.error)}</pre>' in errors[first.pk]
    assert "<strong>Validation errors</strong>" in errors[second.pk]
    assert escape(second.error) in errors[second.pk]
    assert second.error.startswith("response is not JSON")
    assert '<span class="tag tag-ok">valid</span>' in body


def test_the_retry_timeline_shows_each_attempt_and_when_the_next_was_due(eventful_run, operator_client):
    body = panel(operator_client, eventful_run, "answer")

    timeline = body[body.index('<table class="table" id="retry-timeline">') :].split("</table>")[0]
    rows = timeline.split("<tr>")[2:]  # after the header row
    assert len(rows) == 3
    retrying = RunEvent.objects.filter(run=eventful_run, node_id="answer", kind="node_retrying").order_by("id")
    for row, attempt, outcome in zip(rows, (1, 2, 3), ("retrying", "retrying", "succeeded"), strict=True):
        assert f'<td class="num">{attempt}</td>' in row
        assert f"<td>{outcome}</td>" in row
    for row, event in zip(rows, retrying, strict=False):
        assert f'<time datetime="{event.data["next_attempt_at"][:19]}' in row
        assert f"<code>{event.data['error_class']}</code>" in row
    assert "<code>server_error</code>" in rows[0]
    assert "<code>invalid_output</code>" in rows[1]


def test_the_panel_lists_the_nodes_events_and_its_input_hash(eventful_run, operator_client):
    answer = NodeRun.objects.get(run=eventful_run, node_id="answer")
    events = list(RunEvent.objects.filter(run=eventful_run, node_id="answer").order_by("id"))

    body = panel(operator_client, eventful_run, "answer")

    table = body[body.index('<table class="table" id="node-events">') :].split("</table>")[0]
    assert table.count("<tr>") == len(events) + 1
    kinds = [event.kind for event in events]
    assert {"node_queued", "node_started", "node_retrying", "node_succeeded"} <= set(kinds)
    positions = [table.index(f"<code>{kind}</code>") for kind in dict.fromkeys(kinds)]
    assert positions == sorted(positions)  # oldest first
    assert answer.input_hash
    assert f'<code id="node-input-hash" class="break">{answer.input_hash}</code>' in body
    assert "only tool nodes receive one" in body  # an llm node has no idempotency key


def test_a_tool_node_shows_the_idempotency_key_its_tool_received(eventful_run, operator_client):
    body = panel(operator_client, eventful_run, "notify")

    message = OutboxMessage.objects.get(run=eventful_run, node_id="notify")
    assert f'<code id="node-idempotency-key" class="break">{message.idempotency_key}</code>' in body
    assert message.idempotency_key == f"{eventful_run.id}:notify"


def test_a_failed_node_shows_its_error_with_its_class(operator_client):
    broken = definition("broken", [tool_node("merge", "json_merge", {"objects": "{{ input.topic }}"})])
    run = drain(run_start(workflow=save_workflow(broken).workflow, input={"topic": "not objects"}))
    merge = NodeRun.objects.get(run=run, node_id="merge")
    assert merge.error_class

    body = panel(operator_client, run, "merge")

    assert f'<code id="node-error-class">{merge.error_class}</code>' in body
    assert escape(merge.error) in body
    assert "node_failed" in body


HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=alert(1)>\"'&"


def test_raw_responses_prompts_and_errors_are_escaped(operator_client):
    answer = llm_node("answer", "Summarise {{ input.topic }}.")
    run = drain(
        run_start(workflow=save_workflow(definition("hostile", [answer])).workflow, input={"topic": HOSTILE}, options={"simulation": {"latency": "fixed:0"}})
    )
    node = NodeRun.objects.get(run=run, node_id="answer")
    as_json = ProviderCall.objects.create(
        run=run, node_run=node, attempt=2, provider="simulated", model="sim-fast", request={"prompt": HOSTILE},
        raw_response=json.dumps({"choices": [{"message": {"content": HOSTILE}}]}), error=HOSTILE, error_class="invalid_output",
    )  # fmt: skip
    ProviderCall.objects.create(run=run, node_run=node, attempt=3, provider="simulated", model="sim-fast", request={}, raw_response=f"not json {HOSTILE}")

    body = panel(operator_client, run, "answer")

    assert "<script>" not in body
    assert "<img" not in body
    assert f'id="rendered-prompt">Summarise {escape(HOSTILE)}.</pre>' in body
    assert pretty(as_json.raw_response) in body  # pretty-printed, then escaped
    assert f"not json {escape(HOSTILE)}" in body  # not JSON: as it came, escaped
    assert f'<pre class="plain error-text">{escape(HOSTILE)}</pre>' in body


def test_a_review_gate_links_its_review_and_shows_the_decision(operator_client, reviewer):
    run, task = start_gated_run("panel-gate")

    waiting = panel(operator_client, run, "gate")
    assert f'<a href="{reverse("reviews:detail", args=[task.pk])}">Review #{task.pk}</a>' in waiting
    assert "No decision yet." in waiting

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("reject", comment="wrong <customer>"))
    task.refresh_from_db()
    assert task.status == ReviewStatus.REJECTED

    decided = panel(operator_client, run, "gate")
    record = decided[decided.index(f'id="node-review-{task.pk}"') :]
    assert "rejected" in record
    assert f"by {reviewer.username}" in record
    assert "<strong>reject</strong>" in record
    assert "<q>wrong &lt;customer&gt;</q>" in record


def test_the_panel_opens_within_the_run_page_without_htmx(eventful_run, operator_client):
    html = operator_client.get(reverse("console:run", args=[eventful_run.id]), {"node": "answer"}).content.decode()

    assert 'id="rendered-prompt"' in html
    assert 'id="retry-timeline"' in html


def test_a_decided_gates_timeline_ends_with_the_decision(operator_client, reviewer):
    run, task = start_gated_run("timeline-gate")
    review_decide(review_id=task.pk, user=reviewer, decision=Decision("approve", version=task.version))

    body = panel(operator_client, run, "gate")

    timeline = body[body.index('id="retry-timeline"') :].split("</table>")[0]
    assert timeline.count("<tr>") == 2  # the header and attempt 1
    assert "<td>succeeded</td>" in timeline
    assert "<code>node_reviewed</code>" in body
