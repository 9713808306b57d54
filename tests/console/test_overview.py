"""The operator overview: who may read it, its window, every figure on a small dataset whose
answers are worked out by hand, the server-drawn charts, and a query count that does not grow
with the data (on SQLite and PostgreSQL alike)."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.console import overview
from apps.console.charts import ChartPoint, bar_chart, compact_number
from apps.providers.breaker import circuit_breaker
from apps.reviews.models import ReviewStatus, ReviewTask
from apps.runs.models import NodeRun, NodeStatus, ProviderCall, Run, RunEvent, RunStatus
from apps.workflows.models import WorkflowVersion
from apps.workflows.roles import REVIEWERS
from tests.factories import definition, llm_node, save_workflow

from .helpers import signed_in

pytestmark = pytest.mark.django_db
URL = "/overview/"


# --- building runs as workers would have left them --------------------------------------------------


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def make_run(version: WorkflowVersion, status: str, *, finished: datetime | None = None, took: float = 0.0, **fields: Any) -> Run:
    """A run in ``status``; a finished one ended at ``finished`` after ``took`` seconds."""
    started = finished - s(took) if finished else timezone.now() - s(5)
    return Run.objects.create(workflow=version.workflow, version=version, status=status, started_at=started, finished_at=finished, **fields)


def make_node(run: Run, node_id: str, status: str, *, took: float | None = None, node_type: str = "llm", error_class: str = "") -> NodeRun:
    """A node of ``run`` that ended with the run after ``took`` seconds (never started when None)."""
    end = run.finished_at or timezone.now()
    started = end - s(took) if took is not None else None
    finished = end if status in (NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED) else None
    return NodeRun.objects.create(
        run=run,
        node_id=node_id,
        node_type=node_type,
        status=status,
        attempt=1 if took is not None else 0,
        started_at=started,
        finished_at=finished,
        error_class=error_class,
    )


def make_call(node: NodeRun, *, at: datetime, tokens_in: int, tokens_out: int, cost: str) -> ProviderCall:
    call = ProviderCall.objects.create(
        run=node.run,
        node_run=node,
        attempt=1,
        provider="simulated",
        model="sim-fast",
        request={},
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost=Decimal(cost),
    )
    ProviderCall.objects.filter(pk=call.pk).update(created_at=at)  # created_at is set on insert: move it back
    return call


def make_event(node: NodeRun, kind: str, error_class: str) -> RunEvent:
    return RunEvent.objects.create(run=node.run, node_id=node.node_id, kind=kind, attempt=1, data={"error": "boom", "error_class": error_class})


def make_review(run: Run, node_id: str, *, due_at: datetime | None, status: str = ReviewStatus.PENDING, group: str | None = None) -> ReviewTask:
    node = make_node(run, node_id, NodeStatus.WAITING_REVIEW, took=1, node_type="review")
    task = ReviewTask.objects.create(
        run=run, node_run=node, node_id=node_id, attempt=1, subject_node_id="draft", subject={}, subject_hash="0" * 64, due_at=due_at, status=status
    )
    if group:
        task.assigned_groups.add(Group.objects.get_or_create(name=group)[0])
    return task


# --- the known dataset ----------------------------------------------------------------------------------


@dataclass
class Known:
    now: datetime
    user: Any  # the operator: reads every review
    alpha: WorkflowVersion
    beta: WorkflowVersion
    runs: dict[str, Run]


@pytest.fixture
def known(operator) -> Known:
    """Two workflows, worked out by hand:

    alpha (draft -> polish), finished in the last 24 hours: r1 succeeded in 10 s (draft 2 s,
    polish 3 s), r2 succeeded in 20 s (draft 4 s, polish 1 s), r3 failed in 30 s (draft 5 s,
    polish failed after 6 s with server_error); and r4 succeeded three days ago in 100 s (draft
    and polish 50 s each). beta (answer): r5 succeeded in 40 s (answer 7 s), r6 cancelled after
    50 s (answer cancelled, never started), r7 over budget after 60 s (answer failed after 8 s
    with over_budget). Active now: 2 running, 1 pending, 1 waiting for a review.
    """
    now = timezone.now()
    alpha = save_workflow(definition("alpha", [llm_node("draft"), llm_node("polish", depends_on=["draft"])]))
    beta = save_workflow(definition("beta", [llm_node("answer")]))
    ago = now - timedelta(hours=2)
    runs = {
        "r1": make_run(alpha, RunStatus.SUCCEEDED, finished=ago, took=10),
        "r2": make_run(alpha, RunStatus.SUCCEEDED, finished=ago, took=20),
        "r3": make_run(alpha, RunStatus.FAILED, finished=ago, took=30),
        "r4": make_run(alpha, RunStatus.SUCCEEDED, finished=now - timedelta(days=3), took=100),
        "r5": make_run(beta, RunStatus.SUCCEEDED, finished=ago, took=40),
        "r6": make_run(beta, RunStatus.CANCELLED, finished=ago, took=50),
        "r7": make_run(beta, RunStatus.BUDGET_EXCEEDED, finished=ago, took=60),
        "r8": make_run(alpha, RunStatus.RUNNING),
        "r9": make_run(beta, RunStatus.RUNNING),
        "r10": make_run(beta, RunStatus.PENDING),
        "r11": make_run(alpha, RunStatus.WAITING_REVIEW),
    }
    nodes = [
        ("r1", "draft", NodeStatus.SUCCEEDED, 2, ""),
        ("r1", "polish", NodeStatus.SUCCEEDED, 3, ""),
        ("r2", "draft", NodeStatus.SUCCEEDED, 4, ""),
        ("r2", "polish", NodeStatus.SUCCEEDED, 1, ""),
        ("r3", "draft", NodeStatus.SUCCEEDED, 5, ""),
        ("r3", "polish", NodeStatus.FAILED, 6, "server_error"),
        ("r4", "draft", NodeStatus.SUCCEEDED, 50, ""),
        ("r4", "polish", NodeStatus.SUCCEEDED, 50, ""),
        ("r5", "answer", NodeStatus.SUCCEEDED, 7, ""),
        ("r6", "answer", NodeStatus.CANCELLED, None, ""),
        ("r7", "answer", NodeStatus.FAILED, 8, "over_budget"),
        ("r8", "draft", NodeStatus.RUNNING, 1, ""),
    ]
    for run, node_id, status, took, error_class in nodes:
        make_node(runs[run], node_id, status, took=took, error_class=error_class)
    return Known(now=now, user=operator, alpha=alpha, beta=beta, runs=runs)


def overview_of(known: Known, window: str = "24h") -> overview.Overview:
    return overview.overview_get(user=known.user, window=overview.WINDOWS[window], now=known.now)


def node(known: Known, run: str, node_id: str) -> NodeRun:
    return NodeRun.objects.get(run=known.runs[run], node_id=node_id)


# --- who may read it ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["operator", "admin", "reviewer"])
def test_operators_admins_and_reviewers_read_the_overview(request, role):
    response = signed_in(request.getfixturevalue(role)).get(URL)

    assert response.status_code == 200
    assert b"<h1>Overview</h1>" in response.content


def test_the_outsider_is_forbidden(outsider):
    assert signed_in(outsider).get(URL).status_code == 403


def test_anonymous_people_sign_in_first():
    response = Client().get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('login')}?next=")


def test_the_navigation_links_to_the_overview_and_marks_it_current(operator_client):
    html = operator_client.get(reverse("console:runs")).content.decode()
    assert f'<a href="{URL}">Overview</a>' in html

    html = operator_client.get(URL).content.decode()
    assert f'<a href="{URL}" aria-current="page">Overview</a>' in html


# --- the window -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["1h", "24h", "7d", "30d"])
def test_each_window_is_offered_and_the_chosen_one_is_current_and_refreshed(operator_client, key):
    html = operator_client.get(URL, {"window": key}).content.decode()

    assert f'href="{URL}?window={key}" aria-current="page"' in html
    assert html.count('aria-current="page"') == 2  # the window and the navigation's Overview
    assert f"The {overview.WINDOWS[key].label}, refreshed every {overview.WINDOWS[key].refresh_label}." in html
    assert f'hx-get="{URL}?window={key}" hx-trigger="every {overview.WINDOWS[key].refresh_seconds}s"' in html


def test_without_a_window_the_page_shows_the_last_24_hours(operator_client):
    html = operator_client.get(URL).content.decode()

    assert f'href="{URL}?window=24h" aria-current="page"' in html
    assert "overview-notice" not in html


@pytest.mark.parametrize("bad", ["2w", "<script>alert(1)</script>", "24h' OR 1=1", "x" * 5000])
def test_an_unknown_window_shows_the_default_with_an_inline_message(operator_client, known, bad):
    response = operator_client.get(URL, {"window": bad})
    html = response.content.decode()

    assert response.status_code == 200
    assert "There is no window" in html
    assert "showing the last 24 hours" in html
    assert f'href="{URL}?window=24h" aria-current="page"' in html
    assert "<script>alert" not in html
    assert 'id="overall-success">50%<' in html  # the default window's figures, not an error


def test_the_window_limits_what_is_counted(known):
    day = overview_of(known, "24h")
    week = overview_of(known, "7d")
    hour = overview_of(known, "1h")

    assert day.runs.finished_total == 6
    assert week.runs.finished_total == 7  # r4 finished three days ago
    assert hour.runs.finished_total == 0  # everything finished two hours ago
    assert hour.runs.active_total == day.runs.active_total == 4  # active now, whenever they started


# --- every figure on the known dataset ---------------------------------------------------------------------


def test_runs_by_status_counts_the_active_now_and_the_finished_in_the_window(known):
    runs = overview_of(known).runs

    assert runs.active == {"pending": 1, "running": 2, "waiting_review": 1}
    assert runs.finished == {"succeeded": 3, "failed": 1, "cancelled": 1, "budget_exceeded": 1}
    assert runs.success_rate == 0.5


def test_success_rate_per_workflow_puts_the_least_successful_first(known):
    workflows = overview_of(known).runs.workflows

    assert [(w.workflow, w.finished, w.succeeded, w.failed) for w in workflows] == [("beta", 3, 1, 2), ("alpha", 3, 2, 1)]
    assert workflows[0].rate == pytest.approx(1 / 3)


def test_success_rate_per_node_counts_succeeded_and_failed_nodes_only(known):
    nodes = overview_of(known).nodes

    # r6's cancelled answer never ran, and r8's draft is still running: neither counts.
    assert [(n.workflow, n.node_id, n.finished, n.succeeded) for n in nodes.rows] == [
        ("beta", "answer", 2, 1),
        ("alpha", "polish", 3, 2),
        ("alpha", "draft", 3, 3),
    ]
    assert nodes.more is False


def test_success_rate_per_node_shows_the_least_successful_and_says_there_are_more(known):
    nodes = overview.node_success_rates(since=known.now - timedelta(days=1), until=known.now, limit=2)

    assert [n.node_id for n in nodes.rows] == ["answer", "polish"]
    assert nodes.more is True


def test_latency_percentiles_are_the_nearest_rank_of_the_durations(known):
    day = overview_of(known)
    week = overview_of(known, "7d")

    # nodes in the last day took 2, 3, 4, 1, 5, 6, 7, 8 s: sorted, p50 is the 4th, p95 and p99 the 8th
    assert day.node_latency.count == 8
    assert (day.node_latency.p50, day.node_latency.p95, day.node_latency.p99) == (s(4), s(8), s(8))
    # runs took 10, 20, 30, 40, 50, 60 s: p50 is the 3rd (ceil(0.5 x 6)), p95 and p99 the 6th
    assert day.run_latency.count == 6
    assert (day.run_latency.p50, day.run_latency.p95, day.run_latency.p99) == (s(30), s(60), s(60))
    # with r4 (100 s) in the week: 7 runs, p50 the 4th, p95 the 7th
    assert (week.run_latency.p50, week.run_latency.p95) == (s(40), s(100))


def test_twenty_node_durations_give_distinct_p50_p95_and_p99(known):
    version = save_workflow(definition("many", [llm_node(f"n{i:02d}") for i in range(20)]))
    run = make_run(version, RunStatus.SUCCEEDED, finished=known.now - timedelta(days=10), took=60)
    tenths = list(range(1, 21))
    random.Random(4).shuffle(tenths)
    for i, t in enumerate(tenths):
        make_node(run, f"n{i:02d}", NodeStatus.SUCCEEDED, took=t / 10)
    make_node(run, "gate", NodeStatus.SUCCEEDED, took=3600, node_type="review")  # a person's wait is not latency
    since = known.now - timedelta(days=11)

    latency = overview.node_latency(since=since, until=known.now - timedelta(days=9))

    # 0.1 s .. 2.0 s: p50 = ceil(10)th = 1.0 s, p95 = ceil(19)th = 1.9 s, p99 = ceil(19.8)th = 2.0 s
    assert latency.count == 20
    assert (latency.p50, latency.p95, latency.p99) == (s(1.0), s(1.9), s(2.0))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_the_nearest_rank_worked_out_in_python(known, seed):
    rng = random.Random(seed)
    version = save_workflow(definition("sampled", [llm_node("only")]))
    end = known.now - timedelta(days=20)
    durations = [rng.randint(1, 100_000) / 1000 for _ in range(rng.randint(1, 40))]
    for took in durations:
        make_run(version, RunStatus.SUCCEEDED, finished=end, took=took)

    latency = overview.run_latency(since=end - s(1), until=end + s(1))

    ranked = sorted(durations)
    expected = {f: s(ranked[math.ceil(f * len(ranked)) - 1]) for f in overview.PERCENTILES}
    assert latency.count == len(durations)
    assert latency.percentiles == expected


def test_an_empty_window_has_no_percentiles():
    latency = overview.run_latency(since=timezone.now() - timedelta(hours=1), until=timezone.now())

    assert latency.count == 0
    assert latency.percentiles == {0.5: None, 0.95: None, 0.99: None}


def test_tokens_and_cost_are_summed_per_day_with_every_day_of_the_window(known):
    recent, old = known.now - timedelta(minutes=30), known.now - timedelta(days=3)
    make_call(node(known, "r1", "draft"), at=recent, tokens_in=100, tokens_out=20, cost="0.0100")
    make_call(node(known, "r2", "draft"), at=recent, tokens_in=50, tokens_out=5, cost="0.0025")
    make_call(node(known, "r4", "draft"), at=old, tokens_in=7, tokens_out=3, cost="0.5000")
    make_call(node(known, "r4", "polish"), at=known.now - timedelta(days=8), tokens_in=1000, tokens_out=1000, cost="9")  # before the window

    week = overview_of(known, "7d")

    days = [timezone.localtime(b.start).date() for b in week.usage]
    first = timezone.localdate(known.now - timedelta(days=7))
    assert days == [first + timedelta(days=i) for i in range(8)]  # the window's 8 calendar days, partial ends included
    by_day = {timezone.localtime(b.start).date(): b for b in week.usage}
    assert by_day[timezone.localdate(recent)].tokens_in == 150
    assert by_day[timezone.localdate(recent)].tokens_out == 25
    assert by_day[timezone.localdate(recent)].cost == Decimal("0.0125")
    assert by_day[timezone.localdate(recent)].calls == 2
    assert by_day[timezone.localdate(old)].cost == Decimal("0.5")
    assert sum(b.calls for b in week.usage) == 3
    assert week.usage_totals.cost == Decimal("0.5125")


def test_short_windows_chart_tokens_and_cost_per_hour(known):
    # Placed either side of the current hour's start, whatever minute the test runs at.
    hour = timezone.localtime(known.now).replace(minute=0, second=0, microsecond=0)
    make_call(node(known, "r1", "draft"), at=hour, tokens_in=10, tokens_out=1, cost="0.001")
    make_call(node(known, "r2", "draft"), at=hour - s(1), tokens_in=5, tokens_out=2, cost="0.002")

    day = overview_of(known)

    assert len(day.usage) == 25  # the 24 hours' hour bars, partial first and last included
    assert all(b.start.minute == 0 for b in day.usage)
    assert day.usage[-1].start == hour
    assert (day.usage[-1].tokens, day.usage[-1].cost) == (11, Decimal("0.001"))  # the current hour, from its first instant
    assert (day.usage[-2].tokens, day.usage[-2].cost) == (7, Decimal("0.002"))  # the hour before, to its last second


def test_retries_and_failures_are_counted_by_error_class_from_the_event_log(known):
    polish, answer = node(known, "r3", "polish"), node(known, "r7", "answer")
    make_event(polish, "node_retrying", "server_error")
    make_event(polish, "node_retrying", "server_error")
    make_event(polish, "node_failed", "server_error")
    make_event(answer, "node_retrying", "rate_limited")
    make_event(answer, "node_failed", "over_budget")
    RunEvent.objects.create(run=polish.run, node_id="polish", kind="node_succeeded", attempt=1)
    now = timezone.now()

    errors = overview.failures_by_error_class(since=now - timedelta(hours=1), until=now + s(1))
    later = overview.failures_by_error_class(since=now + timedelta(days=1), until=now + timedelta(days=2))

    assert [(e.error_class, e.retries, e.failures) for e in errors] == [("server_error", 2, 1), ("over_budget", 0, 1), ("rate_limited", 1, 0)]
    assert later == []


def test_circuit_breakers_show_their_state(known, operator_client):
    breaker = circuit_breaker("simulated", "sim-overview-breaker")
    for _ in range(6):
        breaker.before_call()
        breaker.after_call(ok=False, error_class="server_error")

    html = operator_client.get(URL).content.decode()

    section = html[html.index('id="overview-breakers"') :]
    assert "sim-overview-breaker" in section
    row = section[section.index("sim-overview-breaker") :]
    assert 'data-state="open"' in row[: row.index("</tr>")]


@pytest.fixture
def reviews(known) -> None:
    """Three pending reviews (two overdue, one of them and the not-yet-due one assigned to the
    reviewers group), and an approved one that was due long ago."""
    run = known.runs["r11"]
    make_review(run, "gate1", due_at=known.now - timedelta(hours=1), group=REVIEWERS)
    make_review(run, "gate2", due_at=known.now - timedelta(minutes=1))
    make_review(run, "gate3", due_at=known.now + timedelta(hours=1), group=REVIEWERS)
    make_review(run, "gate4", due_at=known.now - timedelta(days=1), status=ReviewStatus.APPROVED)


def test_pending_and_overdue_reviews_link_to_the_inbox(reviews, operator_client):
    html = operator_client.get(URL).content.decode()

    assert 'id="reviews-pending">3<' in html
    assert re.search(r'id="reviews-overdue">2<', html)
    assert f'href="{reverse("reviews:inbox")}?filter=overdue"' in html


def test_a_reviewer_counts_the_reviews_assigned_to_them(reviews, reviewer):
    html = signed_in(reviewer).get(URL).content.decode()

    assert "Your reviews" in html
    assert 'id="reviews-pending">2<' in html
    assert 'id="reviews-overdue">1<' in html


def test_the_page_shows_every_section_with_the_known_figures(known, operator_client):
    make_call(node(known, "r1", "draft"), at=timezone.now() - timedelta(minutes=1), tokens_in=1234, tokens_out=56, cost="0.0125")
    make_event(node(known, "r3", "polish"), "node_failed", "server_error")

    html = operator_client.get(URL).content.decode()

    for section in ("overview-runs", "overview-usage", "overview-workflows", "overview-latency", "overview-nodes", "overview-errors", "overview-breakers"):
        assert f'id="{section}"' in html
    assert re.search(r'data-status="running">.*?<span class="count">2</span>', html, re.S)
    assert 'id="overall-success">50%<' in html
    assert 'id="total-cost">$0.0125<' in html
    assert 'id="total-tokens">1,234 / 56<' in html
    assert re.search(r'data-workflow="beta">.*?33%', html, re.S)
    assert re.search(r'data-node="beta/answer">.*?50%', html, re.S)
    assert re.search(r'id="latency-nodes">.*?data-percentile="p50">4.0 s<', html, re.S)
    assert re.search(r'id="latency-runs">.*?data-percentile="p95">1 min 00 s<', html, re.S)
    assert re.search(r'data-error-class="server_error">.*?<td class="num">0</td>\s*<td class="num">1</td>', html, re.S)
    assert html.count('class="bar-chart"') == 2


def test_an_empty_database_shows_no_data_states(operator_client):
    html = operator_client.get(URL).content.decode()

    assert "No run finished in the last 24 hours." in html
    assert "No node finished in the last 24 hours." in html
    assert "No retry and no failure in the last 24 hours." in html
    assert "no latency to show" in html
    assert "no data in this window" in html
    assert 'id="overall-success">—<' in html


def test_the_htmx_refresh_gets_the_body_only(known, operator_client):
    response = operator_client.get(URL, {"window": "7d"}, headers={"HX-Request": "true"})
    html = response.content.decode()

    assert html.lstrip().startswith('<div id="overview-body"')
    assert f'hx-get="{URL}?window=7d"' in html
    assert "<h1>" not in html


# --- charts ---------------------------------------------------------------------------------------------------


def test_the_svg_chart_escapes_its_labels_and_titles():
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    chart = bar_chart(
        [ChartPoint(label=hostile, title=hostile, value=3), ChartPoint(label="ok", title="ok", value=1)], title=hostile, value_label=compact_number
    )

    svg = render_to_string("console/overview.html#bar-chart", {"chart": chart})

    assert "<script>" not in svg
    assert "<img" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img" in svg
    assert svg.count("<rect") == 2


def test_the_week_page_draws_a_bar_per_day_in_each_chart(known, operator_client):
    make_call(node(known, "r4", "draft"), at=known.now - timedelta(days=3), tokens_in=7, tokens_out=3, cost="0.5")

    html = operator_client.get(URL, {"window": "7d"}).content.decode()

    charts = re.findall(r'<g class="chart-bars">(.*?)</g>', html, re.S)
    assert [c.count("<rect") for c in charts] == [8, 8]  # tokens and cost, the window's 8 calendar days
    day = timezone.localtime(known.now - timedelta(days=3))
    assert f"{day:%a %d %b}: 10 tokens (7 in, 3 out), 1 call" in html
    assert f"{day:%a %d %b}: $0.5" in html


def test_an_error_class_from_the_event_log_is_printed_as_text(known, operator_client):
    make_event(node(known, "r3", "polish"), "node_failed", "<img src=x onerror=alert(1)>")

    html = operator_client.get(URL).content.decode()

    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_bars_are_scaled_to_a_rounded_maximum():
    chart = bar_chart([ChartPoint("a", "a", 30), ChartPoint("b", "b", 60), ChartPoint("c", "c", 0)], title="t", value_label=compact_number)

    heights = [float(b.height) for b in chart.bars]
    assert heights[2] == 0
    assert heights[1] == pytest.approx(2 * heights[0])
    assert [g.label for g in chart.grid] == ["0", "25", "50", "75", "100"]  # 60 rounds up to 100
    assert chart.has_data


def test_a_month_of_bars_labels_at_most_twelve(known):
    chart = bar_chart([ChartPoint(str(i), str(i), i) for i in range(31)], title="t", value_label=compact_number)

    labelled = [b.label for b in chart.bars if b.label]
    assert 0 < len(labelled) <= 12
    assert chart.bars[-1].label == "30"  # the newest bar is always labelled


# --- queries ------------------------------------------------------------------------------------------------------


def populate(count: int, now: datetime) -> None:
    """``count`` runs over three workflows, every status, spread over 40 days, with their nodes,
    model calls, retry and failure events and reviews."""
    versions = [save_workflow(definition(f"load-{w}", [llm_node("a"), llm_node("b", depends_on=["a"])])) for w in range(3)]
    statuses = [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.BUDGET_EXCEEDED, RunStatus.RUNNING, RunStatus.WAITING_REVIEW]
    for i in range(count):
        status = statuses[i % len(statuses)]
        finished = now - timedelta(hours=(i * 7) % (40 * 24)) if status not in (RunStatus.RUNNING, RunStatus.WAITING_REVIEW) else None
        run = make_run(versions[i % 3], status, finished=finished, took=1 + i % 50)
        ok = status == RunStatus.SUCCEEDED
        a = make_node(run, "a", NodeStatus.SUCCEEDED, took=0.5 + i % 7, error_class="")
        b = make_node(run, "b", NodeStatus.SUCCEEDED if ok else NodeStatus.FAILED, took=0.2 + i % 5, error_class="" if ok else f"class_{i % 4}")
        make_call(a, at=finished or now, tokens_in=10 + i, tokens_out=5, cost="0.001")
        if not ok:
            make_event(b, "node_retrying", f"class_{i % 4}")
            make_event(b, "node_failed", f"class_{i % 4}")
        if status == RunStatus.WAITING_REVIEW:
            make_review(run, "gate", due_at=now - timedelta(hours=i % 3), group=REVIEWERS if i % 2 else None)


def overview_queries(client: Client, window: str, **headers: str) -> int:
    client.get(URL, {"window": window}, headers=headers)  # warm the per-process caches
    with CaptureQueriesContext(connection) as captured:
        response = client.get(URL, {"window": window}, headers=headers)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize("role", ["operator", "reviewer"])
def test_the_overview_costs_the_same_queries_with_10_runs_and_with_200(request, role):
    client = signed_in(request.getfixturevalue(role))
    now = timezone.now()
    populate(10, now)
    few = {w: overview_queries(client, w) for w in overview.WINDOWS}
    few_htmx = overview_queries(client, "7d", **{"HX-Request": "true"})

    populate(200, now)

    assert {w: overview_queries(client, w) for w in overview.WINDOWS} == few
    assert overview_queries(client, "7d", **{"HX-Request": "true"}) == few_htmx
    # The session, the user and their groups; then one query per figure: runs active, runs
    # finished, nodes, two latencies (1 query each on PostgreSQL, 2 + 3 on SQLite), tokens and
    # cost, error classes, breaker states (none with Redis) and transitions, reviews.
    assert few["30d"] <= (13 if connection.vendor == "postgresql" else 21)
