"""Node kinds at run time: each kind renders its input and executes behind one interface.

Adding a kind means one ``prepare`` and one ``execute`` function and one line in ``EXECUTORS``.
Executors run outside any transaction; an LLM executor stores every provider call as soon as
it returns, before the attempt's outcome is decided.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from apps.engine import routing, templating
from apps.engine.spec import AnyNode, LlmNode, LlmRouting, ReviewNode, RouterNode, ToolNode
from apps.engine.tools import TOOLS, ToolArgumentError, ToolContext
from apps.providers.base import ModelRequest, Provider, ProviderError
from apps.providers.breaker import CircuitBreaker, circuit_breaker, is_provider_failure
from apps.providers.pricing import call_cost
from apps.providers.registry import provider_for
from apps.providers.simulated import schema_errors

from . import telemetry
from .budgets import OVER_BUDGET, Reservation, budget_reserve, budget_settle
from .models import ACTIVE_RUN_STATUSES, ProviderCall, Run
from .selectors import node_idempotency_key

MAX_OUTPUT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Claim:
    """A node run this worker owns for one attempt (``attempt`` is its fencing token)."""

    node_run_id: int
    run_id: UUID
    node: AnyNode
    attempt: int
    input: dict[str, Any]
    input_hash: str
    run_options: dict[str, Any] = field(default_factory=dict)
    deferrals: int = 0
    attempt_base: int = 0  # attempts spent before an operator retried the run: they no longer count
    passed_over: tuple[dict[str, str], ...] = ()  # models of the chain passed over in earlier attempts
    budgeted: bool = False  # the run has a budget: every call reserves its worst case first
    traceparent: str = ""  # the run's span (apps.runs.telemetry): this node's spans join its trace
    workflow: str = ""  # the workflow's name, for telemetry


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to. A failure is ``retryable`` when trying again later may succeed
    (timeouts, 429, 5xx, connection errors); ``deferred_until`` means the call was never made
    (the provider's circuit is open) and the attempt does not count."""

    ok: bool
    output: Any = None
    error: str = ""
    error_class: str = ""
    retryable: bool = False
    retry_after: float | None = None
    deferred_until: datetime | None = None
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: Decimal = Decimal(0)
    reused_call_id: int | None = None
    passed_over: tuple[dict[str, str], ...] = ()  # models passed over during this attempt, with why
    awaits_review: bool = False  # a review gate: the node waits for reviewers (apps.reviews)


def _failure(error_class: str, message: str, **extra: Any) -> Outcome:
    return Outcome(ok=False, error=message, error_class=error_class, **extra)


def prepare_llm(node: LlmNode, context: dict[str, Any]) -> dict[str, Any]:
    request = ModelRequest(
        model=node.model,
        prompt=templating.render(node.prompt, context),
        system=templating.render(node.system, context) if node.system else "",
        output_schema=node.output_schema,
        max_tokens=node.max_tokens,
        temperature=node.temperature,
    )
    return request.as_json()


def prepare_tool(node: ToolNode, context: dict[str, Any]) -> dict[str, Any]:
    return {"tool": node.tool, "args": templating.render_value(node.args, context)}


def prepare_router(node: RouterNode, context: dict[str, Any]) -> dict[str, Any]:
    """An llm router's input is its model request (the answer's schema: ``routing.route_schema``).

    Rules are evaluated here, where templates render, over the same upstream context: the input
    records the decision and the executor only returns it. An expression error raises
    TemplateError, which fails the node for good (the claim's render-error path).
    """
    if node.llm is None:
        return {"decision": routing.route_by_rules(node, context)}
    request = ModelRequest(
        model=node.llm.model,
        prompt=templating.render(node.llm.prompt, context),
        system=templating.render(node.llm.system, context) if node.llm.system else "",
        output_schema=routing.route_schema(node),
        max_tokens=node.llm.max_tokens,
        temperature=node.llm.temperature,
    )
    return request.as_json()


def _parse_output(output_schema: dict[str, Any] | None, text: str) -> tuple[Any, str]:
    """The validated output of a model response, or an error message."""
    if output_schema is None:
        return text, ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"response is not JSON: {exc}"
    errors = schema_errors(output_schema, value)
    return (None, "output does not match the schema: " + "; ".join(errors[:5])) if errors else (value, "")


def _reusable_call(claim: Claim) -> ProviderCall | None:
    """A valid response already paid for, for this very request of this node (a recovered node)."""
    calls = ProviderCall.objects.filter(node_run_id=claim.node_run_id, request_hash=claim.input_hash, output__isnull=False)
    return calls.filter(error_class="").order_by("-id").first()


def _cached_call(claim: Claim) -> ProviderCall | None:
    """A valid answer to this very request (same input hash) of this node on any run of the same
    workflow version, made within the node's ``cache.ttl_seconds``: None unless the node opts in.

    The node id and version pin the node's definition; the hash pins the rendered request (model,
    prompts, schema, limits). Run options (simulation settings) are not part of the key.
    """
    cache = getattr(claim.node, "cache", None)
    if cache is None:
        return None
    version = Run.objects.filter(pk=claim.run_id).values("version_id")
    calls = ProviderCall.objects.filter(
        request_hash=claim.input_hash, output__isnull=False, error_class="", node_run__node_id=claim.node.id,
        run__version_id=Subquery(version), created_at__gte=timezone.now() - timedelta(seconds=cache.ttl_seconds),
    )  # fmt: skip
    return calls.order_by("-id").first()


def _from_cache(call: ProviderCall) -> Outcome:
    # Paid for by the run that made the call: this run is charged nothing for it.
    return Outcome(ok=True, output=call.output, model=call.model, reused_call_id=call.pk)


def _from_call(call: ProviderCall) -> Outcome:
    usage = {"model": call.model, "tokens_in": call.tokens_in, "tokens_out": call.tokens_out, "cost": call.cost}
    return Outcome(ok=True, output=call.output, reused_call_id=call.pk, **usage)


def execute_llm(claim: Claim) -> Outcome:
    """One model call for an llm node (or an llm router), behind the provider's circuit breaker.

    The call is the claim's prepared request (model, prompt, output schema). A stored valid
    response for this very request is reused instead of paid for again. The models of the node's
    chain (``model``, then ``fallbacks``) not yet passed over are tried in order: one whose circuit
    is open, whose worst case the run's budget cannot cover, or that fails for good is passed over
    (with why) for the next. On the last model an open circuit defers the node (the attempt is not
    spent) and a budget that does not fit fails it as ``budget_exceeded``: that call is never made.
    After an answer that did not validate, the prompt carries a repair note (``_repair_note``).
    Every call made is stored, with the request exactly as sent, before its outcome is decided.
    """
    reusable = _reusable_call(claim) if claim.attempt > 1 else None  # a first attempt has paid for nothing yet
    if reusable is not None:
        return _from_call(reusable)
    cached = _cached_call(claim)
    if cached is not None:
        return _from_cache(cached)
    passed: list[dict[str, str]] = []
    spent = Outcome(ok=False)  # usage of the calls made on models passed over in this attempt
    chain = _models_left(claim)
    repair = _repair_note(claim) if claim.attempt > 1 else ""
    for position, candidate in enumerate(chain):
        last = position == len(chain) - 1
        outcome = _try_model(claim, candidate, repair, last)
        if outcome.error_class in PASS_OVER and not last:
            passed.append({"model": candidate, "reason": outcome.error})
            spent = _add_usage(spent, outcome)
            continue
        return replace(_add_usage(outcome, spent), passed_over=tuple(passed))
    raise AssertionError("a node's model chain is never empty")


# Why a model is passed over for the next one within one attempt: its circuit is open, the
# budget cannot cover its worst case, or it failed for good (a bad request, an unknown model).
PASS_OVER = frozenset({"circuit_open", OVER_BUDGET, "pass_over"})


def model_chain(node: AnyNode) -> list[str]:
    """The node's model and its fallbacks, in the order they are tried."""
    config = node.llm if isinstance(node, RouterNode) else node
    assert isinstance(config, LlmNode | LlmRouting)
    return [config.model, *config.fallbacks]


def _models_left(claim: Claim) -> list[str]:
    gone = {entry["model"] for entry in claim.passed_over}
    chain = model_chain(claim.node)
    return [m for m in chain if m not in gone] or chain[-1:]


def _add_usage(outcome: Outcome, more: Outcome) -> Outcome:
    return replace(outcome, tokens_in=outcome.tokens_in + more.tokens_in, tokens_out=outcome.tokens_out + more.tokens_out, cost=outcome.cost + more.cost)


def _try_model(claim: Claim, model: str, repair: str, last: bool) -> Outcome:
    """One model of the chain: the budget reservation, its breaker, then the call."""
    try:
        provider = provider_for(model, run_options=claim.run_options)
    except ProviderError as exc:
        if last:
            return _failure(exc.error_class, str(exc), retryable=exc.retryable, model=model)
        return _failure("pass_over", f"{exc.error_class}: {exc}", model=model)
    request = _request(claim, model, repair)
    reservation = None
    if claim.budgeted:
        reservation = budget_reserve(run_id=claim.run_id, node_run_id=claim.node_run_id, attempt=claim.attempt, request=request)
        if isinstance(reservation, str):  # the call is never made
            return _failure(OVER_BUDGET, f"budget: {reservation}", model=model)
    breaker = circuit_breaker(provider.name, model)
    decision = breaker.before_call()
    if not decision.allowed:
        _store(claim.run_id, None, reservation)
        until = datetime.fromtimestamp(decision.retry_at or time.time(), tz=UTC)
        return _failure("circuit_open", f"the circuit for {provider.name}/{model} is open", deferred_until=until, model=model)
    outcome = telemetry.provider_call(claim, provider.name, request, lambda: _call(claim, provider, breaker, request, reservation))
    if not outcome.ok and not outcome.retryable and not last:
        return replace(outcome, error_class="pass_over", error=f"{outcome.error_class}: {outcome.error}")
    return outcome


def _request(claim: Claim, model: str, repair: str) -> ModelRequest:
    """What is sent: the prepared request on ``model``, with the repair note after the prompt."""
    prompt = f"{claim.input['prompt']}\n\n{repair}" if repair else claim.input["prompt"]
    return ModelRequest(
        **{**claim.input, "model": model, "prompt": prompt, "options": claim.run_options, "attempt": claim.attempt},
        cancelled=_run_over(claim.run_id),
    )


def _run_over(run_id: UUID) -> Callable[[], bool]:
    """The check a waiting provider asks between its short waits: one indexed read of the run's
    status, at most every ``apps.providers.simulated.CANCEL_CHECK_SECONDS`` per call in flight."""
    return lambda: not Run.objects.filter(pk=run_id, status__in=ACTIVE_RUN_STATUSES).exists()


REPAIR_TEXT_LIMIT = 8000


def _repair_note(claim: Claim) -> str:
    """When this node's last answer did not validate, a note asking again with its validation
    errors and the answer itself (the attempt that follows an invalid one is a repair)."""
    last = ProviderCall.objects.filter(node_run_id=claim.node_run_id).order_by("-id").values("error", "error_class", "raw_response").first()
    if last is None or last["error_class"] != "invalid_output":
        return ""
    answer = _answer_text(last["raw_response"])[:REPAIR_TEXT_LIMIT]
    return (
        "Your previous answer was rejected: it does not satisfy the required JSON schema.\n"
        f"Validation errors: {last['error']}\n"
        f"Your previous answer:\n{answer}\n"
        "Answer again with only JSON that satisfies the schema."
    )


def _answer_text(raw: str) -> str:
    # Both providers keep a chat-completions body verbatim; anything else is quoted whole.
    try:
        return str(json.loads(raw)["choices"][0]["message"]["content"])
    except (ValueError, KeyError, IndexError, TypeError):
        return raw


def _call(claim: Claim, provider: Provider, breaker: CircuitBreaker, request: ModelRequest, reservation: Reservation | None) -> Outcome:
    model = request.model
    call = ProviderCall(
        run_id=claim.run_id, node_run_id=claim.node_run_id, attempt=claim.attempt, provider=provider.name, model=model,
        request=request.as_json(), request_hash=claim.input_hash,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        response = provider.complete(request)
    except ProviderError as exc:
        breaker.after_call(ok=not is_provider_failure(exc), error_class=exc.error_class)
        call.raw_response, call.error, call.error_class = exc.raw, str(exc), exc.error_class
        call.latency_ms = (time.perf_counter() - started) * 1000
        _store(claim.run_id, call, reservation)
        return _failure(exc.error_class, str(exc), retryable=exc.retryable, retry_after=exc.retry_after, model=model)
    except BaseException:
        _store(claim.run_id, None, reservation)  # nothing came back: give the reservation back, then fail the worker
        raise
    breaker.after_call(ok=True)  # an invalid answer says nothing about the provider's health
    cost = call_cost(response.model, response.tokens_in, response.tokens_out)
    call.model, call.raw_response = response.model, response.raw
    call.tokens_in, call.tokens_out, call.cost = response.tokens_in, response.tokens_out, cost
    call.usage_estimated = response.usage_estimated
    call.latency_ms = (time.perf_counter() - started) * 1000
    output, problem = _parse_output(claim.input["output_schema"], response.text)
    call.error, call.error_class = problem, ("invalid_output" if problem else "")
    call.output = None if problem else output
    _store(claim.run_id, call, reservation)
    usage = {"model": response.model, "tokens_in": response.tokens_in, "tokens_out": response.tokens_out, "cost": cost}
    if problem:
        # another draw may well be valid: the next attempt repairs, with these errors fed back
        return _failure("invalid_output", problem, retryable=True, **usage)
    return Outcome(ok=True, output=output, **usage)


def _store(run_id: UUID, call: ProviderCall | None, reservation: Reservation | None) -> None:
    """Store the call and put what it cost on the run's bill, releasing its reservation, at once:
    at no instant is a paid call counted neither as spent nor as reserved. Without a call (it
    was never made, or nothing came back) only the reservation is released."""
    with transaction.atomic():
        if call is not None:
            call.save()
        usage = (call.tokens_in, call.tokens_out, call.cost) if call is not None else (0, 0, Decimal(0))
        budget_settle(run_id=run_id, reservation=reservation, tokens_in=usage[0], tokens_out=usage[1], cost=usage[2])


def execute_router(claim: Claim) -> Outcome:
    """A router's decision: the one its rules made when the claim rendered it, or the model's
    answer (asked like an llm node's call, with the same reuse, breaker and stored calls) turned
    into a route, the low-confidence route when the answer is unsure."""
    node = claim.node
    assert isinstance(node, RouterNode)
    if node.llm is None:
        return Outcome(ok=True, output=claim.input["decision"])
    outcome = execute_llm(claim)
    return replace(outcome, output=routing.route_by_answer(node, outcome.output)) if outcome.ok else outcome


def execute_tool(claim: Claim) -> Outcome:
    node = claim.node
    assert isinstance(node, ToolNode)
    context = ToolContext(run_id=str(claim.run_id), node_id=node.id, idempotency_key=node_idempotency_key(run_id=claim.run_id, node_id=node.id))
    try:
        output = TOOLS[node.tool](**claim.input["args"], context=context)
        size = len(json.dumps(output).encode())
    except (ToolArgumentError, TypeError) as exc:
        return _failure("tool_argument_error", f"{node.tool}: {exc}")
    except Exception as exc:  # a tool is user code: any failure fails the node, with its class
        return _failure(type(exc).__name__, f"{node.tool}: {exc}")
    if size > MAX_OUTPUT_BYTES:
        return _failure("output_too_large", f"output is {size} bytes, over {MAX_OUTPUT_BYTES}")
    return Outcome(ok=True, output=output)


def prepare_review(node: ReviewNode, context: dict[str, Any]) -> dict[str, Any]:
    """The output under review, frozen: the claim stores it as the node's input, and its hash is
    the one the reviewer approves (``input_hash``)."""
    return {"subject": node.subject_id, "output": context["nodes"].get(node.subject_id)}


def execute_review(claim: Claim) -> Outcome:
    """Nothing to execute: the gate waits; ``apps.reviews`` opens its ReviewTask in the same
    transaction as the node's move to waiting_review."""
    return Outcome(ok=False, awaits_review=True)


PREPARE: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "llm": prepare_llm, "tool": prepare_tool, "router": prepare_router, "review": prepare_review,
}  # fmt: skip
EXECUTORS: dict[str, Callable[[Claim], Outcome]] = {"llm": execute_llm, "tool": execute_tool, "router": execute_router, "review": execute_review}


def execute(claim: Claim) -> Outcome:
    return EXECUTORS[claim.node.type](claim)
