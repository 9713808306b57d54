"""Spans and metrics of runs: a layer over the services and executors that decides nothing.

One run is one trace, however many workers take part::

    run <workflow>         root, opened by run_start; its W3C traceparent is stored on the Run
      node <node id>       one per claim of a node, in the worker: claim -> execute -> complete
        attempt <node id>  the attempt's execution (the executor); node minus attempt is Dagwright's own cost
          chat <model>     one per model call, with the GenAI semantic-convention attributes

A run outlives any process and a span must end in the process that started it, so the ``run`` span
covers the run's creation (its rows written, its first nodes queued) and ends there; every node
span parents to it through ``Run.traceparent``, wherever and whenever it runs, so a trace viewer
shows the run's nodes under it laid out in time. For the same reason a node whose attempts run
in different workers, maybe minutes apart, opens one ``node`` span per claim (``dagwright.attempt``
tells them apart). A node span links to the span current when it opened (the Celery task's).

Metrics (OpenTelemetry metrics API), attributes bounded by the workflows' own names:

- ``dagwright.node.duration`` (histogram, s): one claim of a node, claim to completion, by
  workflow, node id, node type and the status the node moved to;
- ``dagwright.tokens`` (counter): tokens of every model call, by ``gen_ai.token.type``
  (input | output), workflow, node id, provider and model;
- ``dagwright.cost`` (counter, USD): the price of every model call, by the same;
- ``dagwright.node.failures`` (counter): failed attempts, by workflow, node id, model, ``error.type``
  and whether the node will be retried (status ``retry_wait``) or failed for good (``failed``).

The status a node moved to comes from the runs signals (``signals.node_succeeded`` and the rest),
sent in this very thread while the node span is open.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from django.dispatch import receiver
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from orchestrator_site import telemetry as site

from . import signals

if TYPE_CHECKING:
    from apps.providers.base import ModelRequest

    from .executors import Claim, Outcome
    from .models import Run

SCOPE = "dagwright.runs"
_propagator = TraceContextTextMapPropagator()


@contextmanager
def run_span(run: Run, workflow: str, *, source: str = "") -> Iterator[None]:
    """The run's root span around its creation; stores its traceparent on ``run`` (unsaved).

    The span current here (the HTTP request that starts the run) is linked, not a parent: a run
    is a trace of its own. A re-run also links to its ``source`` run's span (a traceparent).
    """
    if not site.tracing():
        yield
        return
    contexts = [trace.get_current_span().get_span_context()]
    if source:
        contexts.append(trace.get_current_span(_propagator.extract({"traceparent": source})).get_span_context())
    links = [Link(context) for context in contexts if context.is_valid] or None
    attributes = {"dagwright.run_id": str(run.pk), "dagwright.workflow": workflow, "dagwright.version_id": str(run.version_id)}
    with _tracer().start_as_current_span(f"run {workflow}", context=Context(), links=links, attributes=attributes) as span:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        run.traceparent = carrier.get("traceparent", "")
        yield


def carry(send: Callable[[], None]) -> Callable[[], None]:
    """``send`` to be run later (after the commit) under the span current now, so that the
    message it sends carries it: the run's first nodes are sent under the run span, and Celery's
    publish and task spans join the run's trace."""
    if not site.tracing():
        return send
    context = otel_context.get_current()

    def under_current_span() -> None:
        token = otel_context.attach(context)
        try:
            send()
        finally:
            otel_context.detach(token)

    return under_current_span


@dataclass
class _NodeTrace:
    """The claim being executed in this thread, and what became of it (the signals tell)."""

    claim: Claim
    started: int  # time.time_ns() before the claim
    status: str = "claim_lost"  # nothing was signalled: another worker took the node over
    outcome: Outcome | None = None


_current: ContextVar[_NodeTrace | None] = ContextVar("dagwright_node_trace", default=None)


def now() -> int:
    """The time a node span starts from (taken before the claim: the span covers it)."""
    return time.time_ns()


@contextmanager
def node_span(claim: Claim, started: int) -> Iterator[None]:
    """The node span of one claim, child of the run's span (from the claim's traceparent), and the
    node's duration and failure metrics once it completed."""
    if not (site.tracing() or site.metering()):
        yield
        return
    current = trace.get_current_span().get_span_context()  # the Celery task's: linked
    parent = _propagator.extract({"traceparent": claim.traceparent}) if claim.traceparent else Context()
    attributes = {**_node_attributes(claim), "dagwright.node.type": claim.node.type, "dagwright.attempt": claim.attempt}
    span = _tracer().start_span(f"node {claim.node.id}", context=parent, start_time=started, links=[Link(current)] if current.is_valid else None)
    span.set_attributes(attributes)
    node = _NodeTrace(claim, started)
    token = _current.set(node)
    try:
        with trace.use_span(span, end_on_exit=False):
            yield
    except BaseException as exc:
        node.status = "error"
        _set_error(span, type(exc).__name__, str(exc))
        raise
    finally:
        _current.reset(token)
        _node_end(span, node)
        span.end()


def _node_end(span: trace.Span, node: _NodeTrace) -> None:
    outcome, attributes = node.outcome, _node_attributes(node.claim)
    span.set_attribute("dagwright.node.status", node.status)
    if node.status == "failed" and outcome is not None:
        _set_error(span, outcome.error_class, outcome.error)
    elif node.status == "retry_wait" and outcome is not None:
        span.set_attribute("error.type", outcome.error_class)
    if not site.metering():
        return
    metrics = _instruments(site.meter_provider())
    attributes.pop("dagwright.run_id")  # one series per run would never end
    metrics.node_duration.record(
        (time.time_ns() - node.started) / 1e9, {**attributes, "dagwright.node.type": node.claim.node.type, "dagwright.node.status": node.status}
    )
    if node.status in ("failed", "retry_wait") and outcome is not None:
        failure = {**attributes, "error.type": outcome.error_class or "unknown", "dagwright.node.status": node.status}
        if outcome.model:
            failure["gen_ai.request.model"] = outcome.model
        metrics.node_failures.add(1, failure)


def attempt(claim: Claim, execute: Callable[[Claim], Outcome]) -> Outcome:
    """Execute the claimed attempt inside its span; the outcome is the node span's to report."""
    node = _current.get()
    if not site.tracing():
        outcome = execute(claim)
    else:
        with _tracer().start_as_current_span(f"attempt {claim.node.id}", attributes={**_node_attributes(claim), "dagwright.attempt": claim.attempt}) as span:
            outcome = execute(claim)
            _outcome_attributes(span, outcome)
    if node is not None:
        node.outcome = outcome
    return outcome


def _outcome_attributes(span: trace.Span, outcome: Outcome) -> None:
    # Not gen_ai.usage.*: tools that add up usage over a trace would count the calls' twice.
    usage = {"dagwright.attempt.tokens_in": outcome.tokens_in, "dagwright.attempt.tokens_out": outcome.tokens_out}
    span.set_attributes({**usage, "dagwright.attempt.cost": float(outcome.cost)})
    if outcome.model:
        span.set_attribute("dagwright.model", outcome.model)
    if outcome.reused_call_id is not None:
        span.set_attribute("dagwright.reused_call_id", outcome.reused_call_id)
    if outcome.passed_over:
        span.set_attribute("dagwright.passed_over", [entry["model"] for entry in outcome.passed_over])
    if outcome.awaits_review:
        span.set_attribute("dagwright.awaits_review", True)
    elif outcome.deferred_until is not None:
        span.set_attribute("error.type", outcome.error_class)  # never called: not an error of the attempt's own
    elif not outcome.ok:
        _set_error(span, outcome.error_class, outcome.error)


def provider_call(claim: Claim, provider: str, request: ModelRequest, call: Callable[[], Outcome]) -> Outcome:
    """One model call inside its ``chat <model>`` span (GenAI semantic conventions), and its tokens
    and cost counted."""
    if not site.tracing():
        outcome = call()
    else:
        attributes = {
            **_node_attributes(claim), "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.system": provider,
            "gen_ai.request.model": request.model, "gen_ai.request.max_tokens": request.max_tokens, "gen_ai.request.temperature": request.temperature,
            "dagwright.attempt": claim.attempt,
        }  # fmt: skip
        with _tracer().start_as_current_span(f"chat {request.model}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            try:
                outcome = call()
            except BaseException as exc:  # nothing came back: the span records the exception
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            span.set_attributes({"gen_ai.response.model": outcome.model, "gen_ai.usage.input_tokens": outcome.tokens_in})
            span.set_attributes({"gen_ai.usage.output_tokens": outcome.tokens_out, "dagwright.cost": float(outcome.cost)})
            if not outcome.ok:
                _set_error(span, outcome.error_class, outcome.error)
    if site.metering():
        _count_usage(claim, provider, request.model, outcome)
    return outcome


def _count_usage(claim: Claim, provider: str, requested: str, outcome: Outcome) -> None:
    metrics = _instruments(site.meter_provider())
    attributes = {**_node_attributes(claim), "gen_ai.provider.name": provider, "gen_ai.request.model": requested, "gen_ai.response.model": outcome.model}
    attributes.pop("dagwright.run_id")  # one series per run would never end
    metrics.tokens.add(outcome.tokens_in, {**attributes, "gen_ai.token.type": "input"})
    metrics.tokens.add(outcome.tokens_out, {**attributes, "gen_ai.token.type": "output"})
    metrics.cost.add(float(outcome.cost), attributes)


def _node_attributes(claim: Claim) -> dict[str, Any]:
    return {"dagwright.run_id": str(claim.run_id), "dagwright.workflow": claim.workflow, "dagwright.node_id": claim.node.id}


def _set_error(span: trace.Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type or "unknown")
    span.set_status(Status(StatusCode.ERROR, message[:500] or error_type))


def _tracer() -> trace.Tracer:
    return site.tracer(SCOPE)


@dataclass(frozen=True)
class _Instruments:
    node_duration: Any
    node_failures: Any
    tokens: Any
    cost: Any


@cache
def _instruments(provider: Any) -> _Instruments:
    meter = provider.get_meter(SCOPE)
    return _Instruments(
        node_duration=meter.create_histogram("dagwright.node.duration", unit="s", description="One claim of a node, from claim to completion"),
        node_failures=meter.create_counter("dagwright.node.failures", unit="{attempt}", description="Failed attempts of nodes"),
        tokens=meter.create_counter("dagwright.tokens", unit="{token}", description="Tokens of model calls, by direction"),
        cost=meter.create_counter("dagwright.cost", unit="USD", description="Price of model calls"),
    )


# The status a node moved to, signalled by node_run_complete while its node span is open in this
# thread; signals about other nodes (a review decided in the web process, the sweeper) pass by.
def _node_moved(node_run: Any, status: str) -> None:
    node = _current.get()
    if node is not None and node.claim.node_run_id == node_run.pk:
        node.status = status


@receiver(signals.node_succeeded, dispatch_uid="telemetry-node-succeeded")
def _node_succeeded(sender: Any, node_run: Any, **kwargs: Any) -> None:
    _node_moved(node_run, "succeeded")


@receiver(signals.node_failed, dispatch_uid="telemetry-node-failed")
def _node_failed(sender: Any, node_run: Any, **kwargs: Any) -> None:
    _node_moved(node_run, "failed")


@receiver(signals.node_retrying, dispatch_uid="telemetry-node-retrying")
def _node_retrying(sender: Any, node_run: Any, **kwargs: Any) -> None:
    _node_moved(node_run, "retry_wait")


@receiver(signals.node_waiting_review, dispatch_uid="telemetry-node-waiting-review")
def _node_waiting_review(sender: Any, node_run: Any, **kwargs: Any) -> None:
    _node_moved(node_run, "waiting_review")
