"""The operator overview: runs, success rates, tokens and cost, latency, failures, circuit breakers
and reviews over a chosen window, refreshed in place (every 10 s for the last hour, every 5 min for 30 days).

Anyone with a role may read it (reviewers read every run and workflow already); the review counts
are those of the reviews the user may see (``apps.reviews.access``).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render

from apps.reviews.access import can_read_all

from . import overview as selectors
from .charts import BarChart, ChartPoint, bar_chart, compact_money, compact_number
from .views import HtmxHttpRequest, viewer_required


@viewer_required
def overview(request: HtmxHttpRequest) -> HttpResponse:
    """The page; to htmx (its own refresh), the part below the window picker."""
    asked = request.GET.get("window", "")
    window = selectors.window_get(asked)
    notice = ""
    if window is None:
        notice = f"There is no window “{asked[:40]}”: showing the {selectors.DEFAULT_WINDOW.label}."
        window = selectors.DEFAULT_WINDOW
    data = selectors.overview_get(user=request.user, window=window)
    context: dict[str, Any] = {
        "overview": data,
        "window": window,
        "windows": selectors.WINDOWS.values(),
        "notice": notice,
        "charts": usage_charts(data),
        "all_reviews": can_read_all(request.user),
    }
    if request.htmx:
        return render(request, "console/overview.html#overview-body", context)
    return render(request, "console/overview.html", context)


def usage_charts(data: selectors.Overview) -> tuple[BarChart, BarChart]:
    """Tokens and cost per hour (short windows) or per day, as two bar charts."""
    by_day = data.window.bucket == "day"
    label_format, title_format = ("%m-%d", "%a %d %b") if by_day else ("%H:%M", "%d %b %H:%M")
    tokens, cost = [], []
    for b in data.usage:
        label, when = b.start.strftime(label_format), b.start.strftime(title_format)
        tokens.append(
            ChartPoint(
                label=label,
                title=f"{when}: {b.tokens:,} tokens ({b.tokens_in:,} in, {b.tokens_out:,} out), {b.calls:,} call{'s' if b.calls != 1 else ''}",
                value=b.tokens,
            )
        )
        cost.append(ChartPoint(label=label, title=f"{when}: {compact_money(float(b.cost))}", value=b.cost))
    per = "day" if by_day else "hour"
    return (
        bar_chart(tokens, title=f"Tokens per {per}", value_label=compact_number),
        bar_chart(cost, title=f"Cost per {per}", value_label=compact_money),
    )
