"""Reads for the operator overview: how runs, nodes, models and reviewers have been doing over a
window of time (the last hour, day, week or month).

Every figure is aggregated by the database (``Count``/``Sum`` with filters, per-day buckets,
percentiles) and the page costs the same number of queries whatever the number of runs: Python
only ever sees grouped rows, at most one per workflow, node, error class or chart bar.

Each query is a range scan of one of the covering indexes that apps/runs/models.py declares for
it (``run_outcomes``, ``node_run_outcomes``, ``provider_call_usage``, ``run_event_kind_created``),
so its cost follows the rows in the window, not the rows in the database. That is why counts are
``COUNT(*)`` or count an indexed column, never the id: PostgreSQL would have to read the table.
bench/console measures it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connections
from django.db.models import Aggregate, Case, Count, DurationField, ExpressionWrapper, F, FloatField, Func, IntegerField, Q, QuerySet, Sum, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from apps.providers.selectors import BreakerView, breaker_overview
from apps.reviews.selectors import ReviewCounts, review_counts
from apps.runs.models import ACTIVE_RUN_STATUSES, NodeRun, NodeStatus, ProviderCall, Run, RunEvent, RunStatus


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    span: timedelta
    bucket: str  # the chart's bar: "hour" or "day"
    refresh_seconds: int  # how often the open page refreshes: a longer window costs more and changes less

    @property
    def refresh_label(self) -> str:
        minutes, seconds = divmod(self.refresh_seconds, 60)
        return f"{minutes} min" if minutes and not seconds else f"{self.refresh_seconds} s"


WINDOWS = {
    w.key: w
    for w in (
        Window("1h", "last hour", timedelta(hours=1), "hour", 10),
        Window("24h", "last 24 hours", timedelta(hours=24), "hour", 30),
        Window("7d", "last 7 days", timedelta(days=7), "day", 120),
        Window("30d", "last 30 days", timedelta(days=30), "day", 300),
    )
}
DEFAULT_WINDOW = WINDOWS["24h"]
FINISHED_RUN_STATUSES = tuple(s for s in RunStatus.values if s not in ACTIVE_RUN_STATUSES)
NODE_OUTCOMES = (NodeStatus.SUCCEEDED, NodeStatus.FAILED)
PERCENTILES = (0.5, 0.95, 0.99)
NODES_SHOWN = 25  # the least successful nodes: the ones an operator looks for
ERROR_CLASSES_SHOWN = 20
# A review gate's node waits for a person for hours: its "latency" would swamp the execution
# latencies the overview is about. Reviews have their own section.
UNTIMED_NODE_TYPES = ("review",)


def window_get(key: str | None) -> Window | None:
    """The window named ``key`` (``1h``, ``24h``, ``7d``, ``30d``); the default when no key is
    given; None for a key that names no window."""
    if not key:
        return DEFAULT_WINDOW
    return WINDOWS.get(key)


# --- runs by status and success rates ------------------------------------------------------------


@dataclass(frozen=True)
class SuccessRate:
    """Succeeded over finished, for a workflow or one node of a workflow."""

    workflow: str
    finished: int
    succeeded: int
    node_id: str = ""

    @property
    def failed(self) -> int:
        return self.finished - self.succeeded

    @property
    def rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None


@dataclass(frozen=True)
class RunCounts:
    active: dict[str, int]  # every active status, now (whenever the run started)
    finished: dict[str, int]  # every finished status, of the runs that finished in the window
    workflows: list[SuccessRate]  # finished in the window, the least successful first

    @property
    def active_total(self) -> int:
        return sum(self.active.values())

    @property
    def finished_total(self) -> int:
        return sum(self.finished.values())

    @property
    def success_rate(self) -> float | None:
        total = self.finished_total
        return self.finished[RunStatus.SUCCEEDED] / total if total else None


def _real(rows: QuerySet, run_path: str, include_test_runs: bool) -> QuerySet:
    """``rows`` without those of test runs (drafts run on the simulated provider), unless asked.
    ``run_path`` leads from the rows to their run ("" for runs themselves)."""
    return rows if include_test_runs else rows.filter(**{f"{run_path}is_test": False})


def runs_active(*, include_test_runs: bool = False) -> dict[str, int]:
    """How many runs are pending, running and waiting for a review now, in one query."""
    rows = _real(Run.objects.order_by(), "", include_test_runs).filter(status__in=ACTIVE_RUN_STATUSES).values("status").annotate(n=Count("*"))
    found = {row["status"]: row["n"] for row in rows}
    return {status: found.get(status, 0) for status in ACTIVE_RUN_STATUSES}


def runs_finished(*, since: datetime, until: datetime, include_test_runs: bool = False) -> tuple[dict[str, int], list[SuccessRate]]:
    """Runs that finished between ``since`` and ``until``: by status, and per workflow with its success rate
    (the least successful first), from one grouped query."""
    rows = (
        _real(Run.objects.order_by(), "", include_test_runs)
        .filter(finished_at__range=(since, until), status__in=FINISHED_RUN_STATUSES)
        .values("status", workflow_name=F("workflow__name"))
        .annotate(n=Count("*"))
    )
    by_status = dict.fromkeys(FINISHED_RUN_STATUSES, 0)
    by_workflow: dict[str, list[int]] = {}
    for row in rows:
        by_status[row["status"]] += row["n"]
        counts = by_workflow.setdefault(row["workflow_name"], [0, 0])
        counts[0] += row["n"]
        counts[1] += row["n"] if row["status"] == RunStatus.SUCCEEDED else 0
    rates = [SuccessRate(workflow=name, finished=n, succeeded=ok) for name, (n, ok) in by_workflow.items()]
    return by_status, sorted(rates, key=lambda r: (r.rate, -r.finished, r.workflow))


def run_counts(*, since: datetime, until: datetime, include_test_runs: bool = False) -> RunCounts:
    finished, workflows = runs_finished(since=since, until=until, include_test_runs=include_test_runs)
    return RunCounts(active=runs_active(include_test_runs=include_test_runs), finished=finished, workflows=workflows)


@dataclass(frozen=True)
class NodeRates:
    rows: list[SuccessRate]
    more: bool  # more nodes finished in the window than are shown


def node_success_rates(*, since: datetime, until: datetime, limit: int = NODES_SHOWN, include_test_runs: bool = False) -> NodeRates:
    """Per workflow and node, the nodes that succeeded over those that succeeded or failed between
    ``since`` and ``until`` (skipped and cancelled nodes did not try), the least successful first, in one query."""
    finished = Count("*")
    succeeded = Count("status", filter=Q(status=NodeStatus.SUCCEEDED))
    rows = (
        _real(NodeRun.objects.order_by(), "run__", include_test_runs)
        .filter(finished_at__range=(since, until), status__in=NODE_OUTCOMES)
        .values("node_id", workflow_name=F("run__workflow__name"))
        .annotate(finished=finished, succeeded=succeeded, rate=Cast(succeeded, FloatField()) / Cast(finished, FloatField()))
        .order_by("rate", "-finished", "workflow_name", "node_id")
    )[: limit + 1]
    rates = [SuccessRate(workflow=r["workflow_name"], node_id=r["node_id"], finished=r["finished"], succeeded=r["succeeded"]) for r in rows]
    return NodeRates(rows=rates[:limit], more=len(rates) > limit)


# --- latency percentiles ------------------------------------------------------------------------


class PercentileDisc(Aggregate):
    """PostgreSQL's ``percentile_disc(fraction) WITHIN GROUP (ORDER BY expression)``: the first
    value whose rank reaches ``fraction`` of the rows; the same value ``_percentiles_by_offset``
    picks on other databases. ``fraction`` is one of this module's constants, never user input."""

    function = "percentile_disc"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, *, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"a percentile is a fraction between 0 and 1, not {fraction!r}")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


@dataclass(frozen=True)
class Latency:
    count: int
    percentiles: dict[float, timedelta | None] = field(default_factory=dict)

    @property
    def p50(self) -> timedelta | None:
        return self.percentiles.get(0.5)

    @property
    def p95(self) -> timedelta | None:
        return self.percentiles.get(0.95)

    @property
    def p99(self) -> timedelta | None:
        return self.percentiles.get(0.99)

    def rows(self) -> list[tuple[str, float | None]]:
        """(``p50``, seconds) for each percentile, for the page."""
        return [(f"p{round(f * 100):g}", d.total_seconds() if d is not None else None) for f, d in self.percentiles.items()]


def percentile_rank(fraction: float, count: int) -> int:
    """The 0-based position of the ``fraction`` percentile among ``count`` sorted values: the
    nearest-rank definition (``ceil(fraction * count)``, 1-based), in floating point as
    PostgreSQL's ``percentile_disc`` computes it, so both databases pick the same row."""
    return max(math.ceil(fraction * count), 1) - 1


def latency_percentiles(rows: QuerySet, fractions: Sequence[float] = PERCENTILES) -> Latency:
    """The percentiles of ``finished_at - started_at`` over ``rows`` (whose rows have both).

    PostgreSQL computes them all in one query with ``percentile_disc``. SQLite has no percentile
    function: after one COUNT, each percentile is the row at its rank in duration order
    (``ORDER BY duration LIMIT 1 OFFSET k``), then for node runs one query reads those rows: at
    most 2 + len(fractions) queries whatever the size.
    """
    rows = rows.order_by()
    if connections[rows.db].vendor == "postgresql":
        duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        aggregates = {f"p{i}": PercentileDisc(duration, fraction=f, output_field=DurationField()) for i, f in enumerate(fractions)}
        found = rows.aggregate(n=Count("*"), **aggregates)
        return Latency(count=found["n"], percentiles={f: found[f"p{i}"] for i, f in enumerate(fractions)})
    return _percentiles_by_offset(rows, fractions)


class JulianDay(Func):
    """SQLite's ``julianday()``: a time as days (a float), computed in C."""

    function = "julianday"
    output_field = FloatField()


def _percentiles_by_offset(rows: QuerySet, fractions: Sequence[float]) -> Latency:
    """After one COUNT, each percentile's row is found by sorting on ``julianday(finished_at) -
    julianday(started_at)``, which SQLite computes natively (Django's duration expression calls a
    Python function per row, ten times slower). A percentile past the middle is sought from the
    longest down: the sort then keeps fewer rows. The duration is the exact difference of the
    row's two times.

    The sort carries as little as the covering index allows: where the primary key is an integer
    (SQLite's rowid, in every index) it carries the id alone and one more query reads the times of
    the rows found; otherwise (a uuid key, not in the index) it carries the two times.

    ``julianday`` counts whole milliseconds, so two durations less than a millisecond apart may
    sort in either order: the percentile is then off by less than a millisecond.
    """
    count = rows.count()
    if not count:
        return Latency(count=0, percentiles=dict.fromkeys(fractions))
    key = JulianDay("finished_at") - JulianDay("started_at")
    by_id = rows.model._meta.pk.get_internal_type() in ("AutoField", "BigAutoField")
    fields = ("pk",) if by_id else ("finished_at", "started_at")
    found = {}
    for f in fractions:
        rank = percentile_rank(f, count)
        if rank < count // 2:
            found[f] = rows.order_by(key.asc()).values_list(*fields)[rank]
        else:
            found[f] = rows.order_by(key.desc()).values_list(*fields)[count - 1 - rank]
    if by_id:
        ids = [pk for (pk,) in found.values()]
        times = {pk: (finished, started) for pk, finished, started in rows.model.objects.filter(pk__in=ids).values_list("pk", "finished_at", "started_at")}
        found = {f: times[pk] for f, (pk,) in found.items()}
    return Latency(count=count, percentiles={f: finished - started for f, (finished, started) in found.items()})


def node_latency(*, since: datetime, until: datetime, include_test_runs: bool = False) -> Latency:
    """How long nodes that succeeded or failed in the window took (their last attempt; review gates excluded)."""
    rows = (
        _real(NodeRun.objects.all(), "run__", include_test_runs)
        .filter(finished_at__range=(since, until), status__in=NODE_OUTCOMES, started_at__isnull=False)
        .exclude(node_type__in=UNTIMED_NODE_TYPES)
    )
    return latency_percentiles(rows)


def run_latency(*, since: datetime, until: datetime, include_test_runs: bool = False) -> Latency:
    """How long runs that finished in the window took, from start to finish (review waits included)."""
    return latency_percentiles(
        _real(Run.objects.all(), "", include_test_runs).filter(finished_at__range=(since, until), status__in=FINISHED_RUN_STATUSES, started_at__isnull=False)
    )


# --- tokens and cost per hour or day ---------------------------------------------------------------


@dataclass(frozen=True)
class UsageBucket:
    start: datetime  # local time, aware
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: Decimal = Decimal(0)

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


def bucket_starts(*, since: datetime, until: datetime, bucket: str) -> list[datetime]:
    """The starts of the hours or days (in the current time zone) that overlap [since, until]."""
    tz = timezone.get_current_timezone()
    first, last = timezone.localtime(since, tz), timezone.localtime(until, tz)
    if bucket == "day":
        days = (last.date() - first.date()).days
        return [datetime.combine(first.date() + timedelta(days=i), time.min, tzinfo=tz) for i in range(days + 1)]
    start = first.replace(minute=0, second=0, microsecond=0).astimezone(UTC)  # step in real hours, not wall-clock ones
    hours = int((last - start).total_seconds() // 3600)
    return [timezone.localtime(start + timedelta(hours=i), tz) for i in range(hours + 1)]


def bucket_of(field_name: str, starts: Sequence[datetime], lo: int = 0, hi: int | None = None) -> Case | Value:
    """The index of the bucket (among ``starts``, sorted) that a row's ``field_name`` falls in, as
    nested CASEs that halve the buckets at each level: the database compares a row's time with
    at most log2(buckets) bounds, natively on every backend (where SQLite's ``TruncDay`` calls a
    Python function per row), with the bounds of the site's time zone computed here."""
    hi = len(starts) if hi is None else hi
    if hi - lo <= 1:
        return Value(lo, output_field=IntegerField())
    mid = (lo + hi) // 2
    earlier = When(**{f"{field_name}__lt": starts[mid]}, then=bucket_of(field_name, starts, lo, mid))
    return Case(earlier, default=bucket_of(field_name, starts, mid, hi), output_field=IntegerField())


def usage_by_bucket(*, since: datetime, until: datetime, bucket: str, include_test_runs: bool = False) -> list[UsageBucket]:
    """Provider calls, tokens and cost per hour or day since ``since``, oldest first, every bucket
    of the window present (zero when nothing was called), in one query.

    Summed over ProviderCall, the record of what was paid (as ``apps.runs.selectors.cost_by_day``):
    a reused answer made no call and costs nothing here.
    """
    starts = bucket_starts(since=since, until=until, bucket=bucket)
    rows = (
        _real(ProviderCall.objects.order_by(), "run__", include_test_runs)
        .filter(created_at__range=(since, until))
        .annotate(bucket=bucket_of("created_at", starts))
        .values("bucket")
        .annotate(calls=Count("*"), tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"), cost=Sum("cost"))
    )
    found = {row["bucket"]: row for row in rows}
    buckets = []
    for i, start in enumerate(starts):
        row = found.get(i)
        if row is None:
            buckets.append(UsageBucket(start=start))
        else:
            buckets.append(
                UsageBucket(start=start, calls=row["calls"], tokens_in=row["tokens_in"], tokens_out=row["tokens_out"], cost=row["cost"] or Decimal(0))
            )
    return buckets


# --- retries and failures by error class ---------------------------------------------------------------


@dataclass(frozen=True)
class ErrorClassCount:
    error_class: str
    retries: int
    failures: int


def failures_by_error_class(*, since: datetime, until: datetime, limit: int = ERROR_CLASSES_SHOWN, include_test_runs: bool = False) -> list[ErrorClassCount]:
    """Node attempts retried and nodes failed between ``since`` and ``until``, per error class, from the event log
    (a failure an operator has since retried is still counted), the most failures first, in one query."""
    retrying, failed = Q(kind="node_retrying"), Q(kind="node_failed")
    rows = (
        _real(RunEvent.objects.order_by(), "run__", include_test_runs)
        .filter(retrying | failed, created_at__range=(since, until))
        .values(error_class=KT("data__error_class"))
        .annotate(retries=Count("kind", filter=retrying), failures=Count("kind", filter=failed))
        .order_by("-failures", "-retries", "error_class")
    )[:limit]
    return [ErrorClassCount(error_class=row["error_class"] or "", retries=row["retries"], failures=row["failures"]) for row in rows]


# --- the whole page ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    window: Window
    since: datetime
    until: datetime
    runs: RunCounts
    nodes: NodeRates
    node_latency: Latency
    run_latency: Latency
    usage: list[UsageBucket]
    errors: list[ErrorClassCount]
    breakers: list[BreakerView]
    reviews: ReviewCounts

    @property
    def usage_totals(self) -> UsageBucket:
        return _sum_buckets(self.since, self.usage)


def _sum_buckets(start: datetime, buckets: Iterable[UsageBucket]) -> UsageBucket:
    items = list(buckets)
    return UsageBucket(
        start=start,
        calls=sum(b.calls for b in items),
        tokens_in=sum(b.tokens_in for b in items),
        tokens_out=sum(b.tokens_out for b in items),
        cost=sum((b.cost for b in items), Decimal(0)),
    )


def overview_get(*, user: Any, window: Window = DEFAULT_WINDOW, now: datetime | None = None, include_test_runs: bool = False) -> Overview:
    """Everything the overview shows for ``window`` ending ``now``; the reviews are those ``user`` may see.

    Test runs (an admin trying a draft) are left out unless ``include_test_runs``: they say
    nothing about how production is doing.
    """
    now = now or timezone.now()
    since = now - window.span
    tests = {"include_test_runs": include_test_runs}
    return Overview(
        window=window,
        since=since,
        until=now,
        runs=run_counts(since=since, until=now, **tests),
        nodes=node_success_rates(since=since, until=now, **tests),
        node_latency=node_latency(since=since, until=now, **tests),
        run_latency=run_latency(since=since, until=now, **tests),
        usage=usage_by_bucket(since=since, until=now, bucket=window.bucket, **tests),
        errors=failures_by_error_class(since=since, until=now, **tests),
        breakers=breaker_overview(transitions_per_breaker=5),
        reviews=review_counts(user=user, now=now),
    )
