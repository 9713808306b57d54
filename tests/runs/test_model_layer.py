"""The model layer seen from a run: repair attempts after invalid structured output, run budgets
(reserved before each call, parallel branches included) and model fallback chains."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from apps.engine.errors import InputError
from apps.providers.base import ModelRequest, count_tokens
from apps.providers.breaker import circuit_breaker
from apps.providers.pricing import MILLION, PRICES, call_cost
from apps.runs import budgets, services
from apps.runs.models import NodeRun, NodeStatus, ProviderCall, Run, RunStatus
from apps.runs.selectors import run_get
from apps.runs.sweeper import sweep
from tests.api.conftest import signed_in
from tests.conftest import require_database
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.providers.loopback import ChatServer, Reply
from tests.runs.helpers import drain

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue")]

TOPIC = "harbour cranes"
PROMPT = "Say something about {{ input.topic }}."
RENDERED = f"Say something about {TOPIC}."
TITLE = {"type": "object", "required": ["title"], "properties": {"title": {"type": "string"}}}
# The simulated model ignores ``pattern``: its answer never validates.
IMPOSSIBLE = {"type": "object", "required": ["code"], "properties": {"code": {"type": "string", "pattern": "^IMPOSSIBLE-[0-9]{40}$"}}}
NO_WAIT = {"backoff_seconds": 0, "backoff_cap_seconds": 0}
# With this seed and half the answers malformed, attempt 1's answer is malformed and attempt 2's is not.
REPAIR_SEED = 4


def start(nodes: list[dict], *, budget: dict | None = None, options: dict | None = None, simulation: dict | None = None) -> Run:
    spec = definition(f"model-layer-{uuid.uuid4().hex[:6]}", nodes, **({"budget": budget} if budget else {}))
    version = save_workflow(spec, check_models=False)  # some tests name a model no provider serves, on purpose
    run_options = {"simulation": {"latency": "fixed:0", **(simulation or {})}, **(options or {})}
    return services.run_start(workflow=version.workflow, input={"topic": TOPIC}, options=run_options)


def node(run: Run, node_id: str) -> NodeRun:
    return run.node_runs.get(node_id=node_id)


def calls(run: Run, node_id: str) -> list[ProviderCall]:
    return list(ProviderCall.objects.filter(run=run, node_run__node_id=node_id).order_by("id"))


def worst_cost(model: str, prompt: str, max_tokens: int) -> Decimal:
    return call_cost(model, count_tokens(prompt), max_tokens)


# --- repair ---------------------------------------------------------------------------------------


def test_invalid_output_is_repaired_with_the_validation_errors_on_the_next_attempt():
    answer = llm_node("answer", PROMPT, output_schema=TITLE, retry={"max_attempts": 3, **NO_WAIT})
    run = drain(start([answer], simulation={"seed": REPAIR_SEED, "faults": {"malformed_rate": 0.5}}))

    assert run.status == RunStatus.SUCCEEDED
    first, second = calls(run, "answer")
    assert (first.attempt, first.error_class, first.output) == (1, "invalid_output", None)
    assert first.raw_response  # the invalid answer is kept
    assert first.request["prompt"] == RENDERED
    repaired = second.request["prompt"]
    assert repaired.startswith(RENDERED)
    assert repaired != RENDERED
    assert first.error in repaired  # the validation errors ...
    assert answer_text(first) in repaired  # ... and the invalid answer, fed back
    assert (second.attempt, second.error_class) == (2, "")
    answered = node(run, "answer")
    assert answered.input["prompt"] == RENDERED  # the stored input stays the rendered request
    assert answered.output == second.output
    assert isinstance(answered.output["title"], str)
    assert answered.cost == first.cost + second.cost > 0  # the repair is costed
    assert run.cost == first.cost + second.cost


def answer_text(call: ProviderCall) -> str:
    return json.loads(call.raw_response)["choices"][0]["message"]["content"]


def test_output_that_never_validates_fails_the_node_when_attempts_run_out_keeping_every_response():
    answer = llm_node("answer", PROMPT, output_schema=IMPOSSIBLE, retry={"max_attempts": 3, **NO_WAIT})
    after = llm_node("after", "Use {{ nodes.answer.code }}.", depends_on=["answer"])
    run = drain(start([answer, after]))

    assert run.status == RunStatus.FAILED
    made = calls(run, "answer")
    assert [c.attempt for c in made] == [1, 2, 3]
    assert all(c.raw_response and c.error_class == "invalid_output" and c.output is None for c in made)
    assert all("Validation errors" in c.request["prompt"] for c in made[1:])
    assert "Validation errors" not in made[0].request["prompt"]
    failed = node(run, "answer")
    assert (failed.status, failed.error_class, failed.output) == (NodeStatus.FAILED, "invalid_output", None)
    assert failed.cost == sum((c.cost for c in made), Decimal(0))
    assert node(run, "after").status == NodeStatus.CANCELLED  # nothing downstream saw an invalid output
    assert not calls(run, "after")


# --- budgets --------------------------------------------------------------------------------------


def test_the_budget_stops_the_run_before_the_call_that_would_exceed_it():
    first = llm_node("first", PROMPT, max_tokens=40)
    second = llm_node("second", "Expand: {{ nodes.first }}", depends_on=["first"], max_tokens=1000)
    third = tool_node("third", depends_on=["second"])
    run = drain(start([first, second, third], budget={"max_tokens": 300}))

    assert run.status == RunStatus.BUDGET_EXCEEDED
    assert node(run, "first").status == NodeStatus.SUCCEEDED
    stopped = node(run, "second")
    assert (stopped.status, stopped.error_class) == (NodeStatus.FAILED, "budget_exceeded")
    assert not calls(run, "second")  # the call was never made
    assert node(run, "third").status == NodeStatus.CANCELLED
    assert "'second'" in run.error
    assert "sim-fast" in run.error
    assert "worst case" in run.error
    remaining = 300 - run.tokens_in - run.tokens_out
    assert f"only {remaining} tokens remain" in run.error
    assert run.tokens_in + run.tokens_out <= 300
    assert (run.reserved_tokens, run.reserved_cost) == (0, 0)


def test_a_run_overrides_the_workflow_budget():
    run = drain(start([llm_node("answer", PROMPT, max_tokens=100)], budget={"max_tokens": 10}, options={"budget": {"max_tokens": 1000}}))
    assert (run.status, run.budget_tokens, run.budget_cost) == (RunStatus.SUCCEEDED, 1000, None)


def test_a_malformed_budget_override_is_refused_before_anything_is_written():
    with pytest.raises(InputError):
        start([llm_node("answer", PROMPT)], options={"budget": {"max_tokens": -1}})
    assert not Run.objects.exists()


def test_budget_pressure_steps_down_to_a_cheaper_fallback_that_fits():
    smart, mini = worst_cost("sim-smart", RENDERED, 200), worst_cost("sim-mini", RENDERED, 200)
    limit = (smart + mini) / 2
    answer = llm_node("answer", PROMPT, model="sim-smart", fallbacks=["sim-mini"], max_tokens=200)
    run = drain(start([answer], budget={"max_cost": str(limit.quantize(Decimal("0.00000001")))}))

    assert run.status == RunStatus.SUCCEEDED
    answered = node(run, "answer")
    assert answered.model == "sim-mini"
    [passed] = answered.passed_over
    assert passed["model"] == "sim-smart"
    assert "budget" in passed["reason"]
    assert f"${smart:f}" in passed["reason"]
    assert [c.model for c in calls(run, "answer")] == ["sim-mini"]
    assert run.cost <= limit


def test_parallel_branches_reserve_one_at_a_time_and_never_overspend():
    """Deterministic: four calls in flight at once, each reserving its worst case."""
    run = start([llm_node(f"b{i}", PROMPT, max_tokens=100) for i in range(4)], budget={"max_tokens": 350})
    request = ModelRequest(model="sim-fast", prompt=RENDERED, max_tokens=100)
    tokens, _ = budgets.worst_case(request)
    rows = list(run.node_runs.order_by("id"))
    for row in rows:
        services.node_run_claim(node_run_id=row.pk)
    held = [budgets.budget_reserve(run_id=run.pk, node_run_id=row.pk, attempt=1, request=request) for row in rows]
    fits = 350 // tokens
    assert [isinstance(h, budgets.Reservation) for h in held] == [True] * fits + [False] * (4 - fits)
    run.refresh_from_db()
    assert run.reserved_tokens == fits * tokens <= 350
    budgets.budget_settle(run_id=run.pk, reservation=held[0], tokens_in=5, tokens_out=20, cost=Decimal("0.00001"))
    run.refresh_from_db()
    assert (run.reserved_tokens, run.tokens_in + run.tokens_out) == ((fits - 1) * tokens, 25)


class HeldChat(ChatServer):
    """The loopback chat server holding every answer until the test lets them go. A call is made
    only after its budget reservation is taken and settled only after its answer, so calls held
    here together were holding their reservations together: the race really ran."""

    def __init__(self, together: int):
        super().__init__()
        self.together, self.held = together, 0
        self._count = threading.Lock()
        self.look = threading.Event()  # set when ``together`` calls are held (or a racing thread failed)
        self.released = threading.Event()

    def next_reply(self, path: str, authorization: str) -> Reply:
        with self._count:
            self.held += 1
            if self.held == self.together:
                self.look.set()
        self.released.wait(timeout=HANG_GUARD)
        return super().next_reply(path, authorization)

    def __exit__(self, *exc: object) -> None:
        self.released.set()  # a failed test must not leave answers held
        super().__exit__(*exc)


HANG_GUARD = 120.0  # seconds: only a broken build waits this long (its calls never overlap)


@pytest.mark.django_db(transaction=True)
def test_parallel_branches_racing_in_threads_never_overspend(settings):
    require_database("postgresql", "SQLite serialises writers with a database lock: the race needs PostgreSQL")
    prompts = {f"b{i}": f"Angle {i} on {TOPIC}." for i in range(6)}
    tokens, _ = budgets.worst_case(ModelRequest(model="gpt-4o-mini", prompt=prompts["b0"], max_tokens=100))  # the same for each branch
    fits, limit = 3, 3 * tokens + tokens // 2  # three worst cases fit, a fourth does not
    branches = [llm_node(node_id, f"Angle {node_id[1:]} on {{{{ input.topic }}}}.", model="gpt-4o-mini", max_tokens=100) for node_id in prompts]
    with HeldChat(together=fits) as server:
        endpoint = {"kind": "openai", "base_url": server.base_url, "api_key_env": "", "timeout_seconds": 2 * HANG_GUARD, "models": ["gpt-4o-mini"]}
        settings.DAGWRIGHT_PROVIDERS = {f"loopback-{uuid.uuid4().hex[:6]}": endpoint}  # a breaker of this test's own
        run = start([*branches, llm_node("join", "Join them.", depends_on=list(prompts))], budget={"max_tokens": limit, "max_cost": "0.001"})
        queued = dict(run.node_runs.filter(status=NodeStatus.QUEUED).values_list("node_id", "pk"))
        threads, errors = race(queued.values(), on_error=server.look.set)
        try:
            assert server.look.wait(timeout=HANG_GUARD), f"only {server.held} of {fits} calls were ever in flight together"
            raise_any(errors)
            asked = {seen.body["messages"][-1]["content"] for seen in server.requests}
            held = {node_id for node_id, prompt in prompts.items() if prompt in asked}
            for node_id in prompts.keys() - held:
                threads[queued[node_id]].join()  # refused (or cancelled) while the held calls keep their reservations
            run.refresh_from_db()
            assert (len(held), run.reserved_tokens) == (fits, fits * tokens)  # the run's record: three reservations held at once
            assert run.node_runs.filter(status=NodeStatus.FAILED, error_class="budget_exceeded").exists()
        finally:
            server.released.set()
            for thread in threads.values():
                thread.join()
    raise_any(errors)

    run.refresh_from_db()
    assert run.status == RunStatus.BUDGET_EXCEEDED
    made = ProviderCall.objects.filter(run=run)
    assert made.count() == len(server.requests) == fits
    spent = sum(c.tokens_in + c.tokens_out for c in made)
    assert spent == run.tokens_in + run.tokens_out <= limit
    assert run.cost == sum((c.cost for c in made), Decimal(0)) <= Decimal("0.001")
    assert (run.reserved_tokens, run.reserved_cost) == (0, 0)


def race(node_run_ids: Iterable[int], on_error: Callable[[], object]) -> tuple[dict[int, threading.Thread], list[Exception]]:
    """Execute each node in a thread of its own, all let go at once. What a thread raises is
    collected (``raise_any``), not left to print as a warning while the test goes on."""
    pks = list(node_run_ids)
    barrier, errors = threading.Barrier(len(pks)), []

    def work(pk: int) -> None:
        try:
            barrier.wait()
            services.node_run_execute(node_run_id=pk)
        except Exception as exc:
            errors.append(exc)
            on_error()
        finally:
            connection.close()

    threads = {pk: threading.Thread(target=work, args=(pk,), name=f"branch-{pk}") for pk in pks}
    for thread in threads.values():
        thread.start()
    return threads, errors


def raise_any(errors: list[Exception]) -> None:
    if errors:
        raise ExceptionGroup("a racing branch failed", list(errors))


def test_the_sweeper_releases_the_reservation_of_a_worker_that_died():
    run = start([llm_node("answer", PROMPT, max_tokens=100)], budget={"max_tokens": 1000})
    row = node(run, "answer")
    services.node_run_claim(node_run_id=row.pk)
    request = ModelRequest(model="sim-fast", prompt=RENDERED, max_tokens=100)
    held = budgets.budget_reserve(run_id=run.pk, node_run_id=row.pk, attempt=1, request=request)  # ... and the worker dies
    assert isinstance(held, budgets.Reservation)
    sweep(now=timezone.now() + timedelta(seconds=600))
    run.refresh_from_db()
    assert (run.reserved_tokens, run.reserved_cost) == (0, 0)
    budgets.budget_settle(run_id=run.pk, reservation=held, tokens_in=3, tokens_out=4, cost=Decimal(0))  # the late worker
    run.refresh_from_db()
    assert (run.reserved_tokens, run.tokens_in, run.tokens_out) == (0, 3, 4)  # released once, spend counted


# --- fallback chains ------------------------------------------------------------------------------


def test_an_open_breaker_on_the_primary_falls_back_to_the_next_model():
    primary = f"sim-open-{uuid.uuid4().hex[:6]}"  # a breaker of this test's own
    breaker = circuit_breaker("simulated", primary)
    for _ in range(5):
        breaker.before_call()
        breaker.after_call(ok=False, error_class="server_error")
    run = drain(start([llm_node("answer", PROMPT, model=primary, fallbacks=["sim-fast"])]))

    assert run.status == RunStatus.SUCCEEDED
    answered = node(run, "answer")
    assert (answered.model, answered.attempt, answered.deferrals) == ("sim-fast", 1, 0)
    assert answered.passed_over == [{"model": primary, "reason": f"the circuit for simulated/{primary} is open"}]
    assert [c.model for c in calls(run, "answer")] == ["sim-fast"]


def test_a_permanent_failure_falls_back_at_once():
    run = drain(start([llm_node("answer", PROMPT, model="no-such-model", fallbacks=["sim-fast"])]))
    answered = node(run, "answer")
    assert (run.status, answered.model, answered.attempt) == (RunStatus.SUCCEEDED, "sim-fast", 1)
    assert answered.passed_over[0]["model"] == "no-such-model"
    assert "unknown_model" in answered.passed_over[0]["reason"]


def test_exhausted_retries_on_a_model_move_on_to_the_next_with_attempts_afresh():
    answer = llm_node("answer", PROMPT, model="sim-fast", fallbacks=["sim-mini"], output_schema=IMPOSSIBLE, retry={"max_attempts": 2, **NO_WAIT})
    run = drain(start([answer]))

    assert run.status == RunStatus.FAILED
    assert [(c.attempt, c.model) for c in calls(run, "answer")] == [(1, "sim-fast"), (2, "sim-fast"), (3, "sim-mini"), (4, "sim-mini")]
    failed = node(run, "answer")
    assert failed.model == "sim-mini"
    [passed] = failed.passed_over
    assert passed["model"] == "sim-fast"
    assert passed["reason"].startswith("2 attempts failed")


def test_an_llm_router_falls_back_too():
    primary = f"sim-open-{uuid.uuid4().hex[:6]}"
    breaker = circuit_breaker("simulated", primary)
    for _ in range(5):
        breaker.before_call()
        breaker.after_call(ok=False, error_class="server_error")
    router = {
        "id": "triage", "type": "router", "routes": ["left", "right"],
        "llm": {"model": primary, "fallbacks": ["sim-fast"], "prompt": PROMPT, "min_confidence": 0.0, "low_confidence_route": "left"},
    }  # fmt: skip
    run = drain(start([router, tool_node("left", depends_on=["triage"]), tool_node("right", depends_on=["triage"])]))
    triage = node(run, "triage")
    assert (run.status, triage.model, triage.passed_over[0]["model"]) == (RunStatus.SUCCEEDED, "sim-fast", primary)


def test_the_api_run_detail_shows_the_budget_and_the_models_passed_over(operator):
    run = drain(start([llm_node("answer", PROMPT, model="no-such-model", fallbacks=["sim-fast"])], budget={"max_cost": "1"}))
    body = signed_in(operator).get(f"/api/v1/runs/{run.id}").json()
    assert (body["budget_tokens"], body["budget_cost"]) == (None, "1.00000000")
    [answer] = body["nodes"]
    assert (answer["model"], answer["passed_over"][0]["model"]) == ("sim-fast", "no-such-model")
    assert run_get(run_id=run.id).pk == run.pk


# --- cost arithmetic ------------------------------------------------------------------------------


def test_costs_follow_the_price_table():
    price_in, price_out = PRICES["sim-smart"]
    assert call_cost("sim-smart", 1000, 500) == (price_in * 1000 + price_out * 500) / MILLION
    request = ModelRequest(model="sim-smart", prompt=RENDERED, system="Be brief.", max_tokens=300)
    tokens_in = count_tokens("Be brief.") + count_tokens(RENDERED)
    assert budgets.worst_case(request) == (tokens_in + 300, ((price_in * tokens_in + price_out * 300) / MILLION).quantize(Decimal("0.00000001")))

    run = drain(start([llm_node("answer", PROMPT, model="sim-smart", fallbacks=["sim-mini"])], budget={"max_cost": "5"}))
    [call] = calls(run, "answer")
    assert call.cost == ((price_in * call.tokens_in + price_out * call.tokens_out) / MILLION).quantize(Decimal("0.00000001")) > 0
    assert run.cost == node(run, "answer").cost == call.cost


def test_the_simulated_provider_stops_structured_output_at_max_tokens():
    from apps.providers.base import ModelRequest
    from apps.providers.simulated import SimulatedProvider, SimulationConfig

    schema = {"type": "object", "properties": {"items": {"type": "array", "minItems": 30, "items": {"type": "string"}}}}
    response = SimulatedProvider(SimulationConfig()).complete(ModelRequest(model="sim-fast", prompt="list many things", output_schema=schema, max_tokens=20))
    assert response.tokens_out <= 20
    assert response.finish_reason == "length"


def test_the_prompt_bound_for_a_real_model_is_never_below_its_byte_count():
    from apps.providers.base import ModelRequest
    from apps.runs.budgets import prompt_tokens_bound

    request = ModelRequest(model="gpt-4o-mini", system="Be brief.", prompt="Résumé of ünïcödé text, 42 times.")
    assert prompt_tokens_bound(request) >= len(request.system.encode()) + len(request.prompt.encode())
    simulated = ModelRequest(model="sim-fast", prompt="three words here")
    assert prompt_tokens_bound(simulated) == 3
