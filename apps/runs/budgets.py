"""Run budgets: a model call's worst case is reserved before the call, and settled after it.

A run's limits (``Run.budget_tokens``, ``Run.budget_cost``; null: no limit) come from the
workflow's ``budget`` with the run's ``options["budget"]`` on top. Before each call its worst
case (the prompt's tokens by ``count_tokens`` plus the node's ``max_tokens`` out, priced with
``call_cost`` for the model) is reserved with one conditional UPDATE on the run, so parallel
branches reserve one at a time and spent + reserved never passes a limit. Once the call returns,
one transaction stores it, adds what it actually cost to the run and releases the reservation.

A reservation is also held on the node run, keyed by its attempt, so a worker that dies holding
one does not shrink the budget for ever: the sweeper releases it when it recovers the attempt,
and a late worker's settle then releases nothing twice.

The guarantee rests on the worst case being one. Output is capped by ``max_tokens`` (providers
stop there, the simulated one included). Prompt tokens are bounded without a tokenizer: the
simulated provider bills exactly ``count_tokens``; for any other model the bound is the prompt's
UTF-8 bytes plus a per-message allowance, since a byte-level BPE token always covers at least one
byte. That over-reserves (about four times the real count for English) but never under-reserves.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F, Q
from pydantic import ValidationError

from apps.engine.errors import InputError, Problem
from apps.engine.spec import Budget
from apps.providers.base import ModelRequest, count_tokens
from apps.providers.pricing import call_cost
from apps.providers.registry import SIMULATED_PREFIX

from .models import NodeRun, Run

OVER_BUDGET = "budget_exceeded"


@dataclass(frozen=True)
class Reservation:
    node_run_id: int
    attempt: int
    tokens: int
    cost: Decimal


def run_limits(workflow_budget: Budget | None, options: dict[str, Any]) -> tuple[int | None, Decimal | None]:
    """The run's (max tokens, max cost): the workflow's budget with the run's ``options["budget"]``
    keys on top. Raises InputError for a malformed override."""
    base = workflow_budget.model_dump(exclude_none=True) if workflow_budget else {}
    override = options.get("budget") or {}
    try:
        budget = Budget.model_validate({**base, **override}) if isinstance(override, dict) else Budget.model_validate(override)
    except ValidationError as exc:
        raise InputError([Problem("/options/budget", f"{'/'.join(map(str, e['loc']))}: {e['msg']}") for e in exc.errors()]) from None
    return budget.max_tokens, budget.max_cost


MESSAGE_OVERHEAD_TOKENS = 8  # chat formatting around each message (role markers, separators)


def prompt_tokens_bound(request: ModelRequest) -> int:
    """The most prompt tokens the provider can bill for this request (see the module docstring)."""
    if request.model.startswith(SIMULATED_PREFIX):
        return count_tokens(request.system) + count_tokens(request.prompt)
    messages = [m for m in (request.system, request.prompt) if m]
    return sum(len(m.encode()) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def worst_case(request: ModelRequest) -> tuple[int, Decimal]:
    """The most a call can spend: its prompt's token bound plus ``max_tokens`` out, at its price."""
    tokens_in = prompt_tokens_bound(request)
    return tokens_in + request.max_tokens, call_cost(request.model, tokens_in, request.max_tokens)


def _fits(tokens: int, cost: Decimal) -> Q:
    spent_tokens = F("tokens_in") + F("tokens_out") + F("reserved_tokens") + tokens
    return (Q(budget_tokens__isnull=True) | Q(budget_tokens__gte=spent_tokens)) & (
        Q(budget_cost__isnull=True) | Q(budget_cost__gte=F("cost") + F("reserved_cost") + cost)
    )


def budget_reserve(*, run_id: UUID, node_run_id: int, attempt: int, request: ModelRequest) -> Reservation | str:
    """Reserve the call's worst case against what remains of the run's budget: the Reservation,
    or, when it does not fit, why (the model, its worst case and what remained). One conditional
    UPDATE on the run: no lock is held across the call."""
    tokens, cost = worst_case(request)
    with transaction.atomic():
        if Run.objects.filter(_fits(tokens, cost), pk=run_id).update(reserved_tokens=F("reserved_tokens") + tokens, reserved_cost=F("reserved_cost") + cost):
            NodeRun.objects.filter(pk=node_run_id, attempt=attempt).update(reserved_tokens=tokens, reserved_cost=cost)
            return Reservation(node_run_id, attempt, tokens, cost)
    return _over_budget_reason(run_id, request.model, tokens, cost)


def _over_budget_reason(run_id: UUID, model: str, tokens: int, cost: Decimal) -> str:
    run = Run.objects.filter(pk=run_id).values("budget_tokens", "budget_cost", "tokens_in", "tokens_out", "cost", "reserved_tokens", "reserved_cost").get()
    remaining = []
    if run["budget_tokens"] is not None:
        remaining.append(f"{run['budget_tokens'] - run['tokens_in'] - run['tokens_out'] - run['reserved_tokens']} tokens")
    if run["budget_cost"] is not None:
        remaining.append(f"${Decimal(run['budget_cost']) - Decimal(run['cost']) - Decimal(run['reserved_cost']):f}")
    return f"{model} needs up to {tokens} tokens / ${cost:f} (worst case) but only {' / '.join(remaining)} remain of the run's budget"


def budget_settle(*, run_id: UUID, reservation: Reservation | None, tokens_in: int, tokens_out: int, cost: Decimal) -> None:
    """Add what a call cost to the run and release its reservation (unless the sweeper already
    did, for an attempt it recovered). Call inside the transaction that stores the call."""
    spend: dict[str, Any] = {}
    if tokens_in or tokens_out or cost:
        spend = {"tokens_in": F("tokens_in") + tokens_in, "tokens_out": F("tokens_out") + tokens_out, "cost": F("cost") + cost}
    if reservation is not None and _node_release(reservation.node_run_id, reservation.attempt):
        spend.update(reserved_tokens=F("reserved_tokens") - reservation.tokens, reserved_cost=F("reserved_cost") - reservation.cost)
    if spend:
        Run.objects.filter(pk=run_id).update(**spend)


def _node_release(node_run_id: int, attempt: int) -> bool:
    # Whoever clears the node's reservation first (the call's settle or the sweeper) releases it.
    return bool(NodeRun.objects.filter(pk=node_run_id, attempt=attempt, reserved_tokens__gt=0).update(reserved_tokens=0, reserved_cost=0))


def budget_release_abandoned(*, node_run: NodeRun) -> None:
    """Give back the reservation of an attempt whose worker stopped (its lease expired). Caller
    holds the node run's row lock and the run's lock (the sweeper's recovery)."""
    if node_run.reserved_tokens and _node_release(node_run.pk, node_run.attempt):
        Run.objects.filter(pk=node_run.run_id).update(
            reserved_tokens=F("reserved_tokens") - node_run.reserved_tokens, reserved_cost=F("reserved_cost") - node_run.reserved_cost
        )
