"""The runs list: filters, id search, pagination, and rows that poll while a run is active."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from apps.console.views import RUNS_PER_PAGE
from apps.runs.models import Run, RunStatus

from .helpers import finish, start

HTMX_ROWS = {"HX-Request": "true", "HX-Target": "run-rows"}


def listed_ids(html: str) -> list[str]:
    """Full ids of the runs listed, in order (each row's link has the id as its title)."""
    return re.findall(r'<a class="mono" href="/runs/[0-9a-f-]+/" title="([0-9a-f-]+)"', html)


def get(client, **params: str) -> str:
    response = client.get(reverse("console:runs"), params)
    assert response.status_code == 200
    return response.content.decode()


def test_the_list_shows_each_runs_columns(version, operator, operator_client):
    run = finish(start(version, operator))
    Run.objects.filter(pk=run.pk).update(tokens_in=1234, tokens_out=56, cost="0.0125")

    html = get(operator_client)

    assert listed_ids(html) == [str(run.id)]
    row = html[html.index('id="run-rows"') :]
    for text in (str(run.id)[:8], "tiny", "v1", "succeeded", operator.username, "1,234 / 56", "$0.0125"):
        assert text in row


def test_filters_by_workflow_and_status(version, chain_version, operator_client):
    tiny_done = finish(start(version))
    tiny_running = start(version)
    chain_done = finish(start(chain_version))

    assert set(listed_ids(get(operator_client, workflow="tiny"))) == {str(tiny_done.id), str(tiny_running.id)}
    assert set(listed_ids(get(operator_client, status="succeeded"))) == {str(tiny_done.id), str(chain_done.id)}
    assert listed_ids(get(operator_client, workflow="tiny", status="running")) == [str(tiny_running.id)]
    assert listed_ids(get(operator_client, workflow="nope")) == []


@pytest.mark.parametrize("shape", ["short", "hyphenated", "without hyphens", "upper case"])
def test_search_by_id_prefix(version, operator_client, shape):
    runs = [start(version) for _ in range(3)]
    wanted = str(runs[1].id)
    prefix = {
        "short": wanted[:6],
        "hyphenated": wanted[:18],
        "without hyphens": wanted.replace("-", "")[:14],
        "upper case": wanted[:10].upper(),
    }[shape]

    listed = listed_ids(get(operator_client, q=prefix))

    assert wanted in listed
    assert all(run_id.replace("-", "").startswith(prefix.lower().replace("-", "")) for run_id in listed)


def test_search_finds_one_run_by_its_full_id(version, operator_client):
    runs = [start(version) for _ in range(3)]

    assert listed_ids(get(operator_client, q=str(runs[0].id))) == [str(runs[0].id)]


@pytest.mark.parametrize("text", ["not-a-uuid", "zz", "1" * 40, "' OR 1=1 --"])
def test_a_search_that_cannot_be_an_id_finds_nothing(version, operator_client, text):
    start(version)

    html = get(operator_client, q=text)

    assert listed_ids(html) == []
    assert "No runs match." in html


def test_pages_hold_a_fixed_number_of_runs_newest_first(version, operator_client):
    runs = [finish(start(version)) for _ in range(RUNS_PER_PAGE + 3)]
    newest_first = [str(run.id) for run in reversed(runs)]

    first, second = get(operator_client), get(operator_client, page="2")

    assert listed_ids(first) == newest_first[:RUNS_PER_PAGE]
    assert listed_ids(second) == newest_first[RUNS_PER_PAGE:]
    assert "Page 1 of 2" in first
    assert 'href="?page=2" rel="next"' in first
    assert 'href="?page=1" rel="prev"' in second


def test_pagination_keeps_the_filters(version, operator_client):
    for _ in range(RUNS_PER_PAGE + 1):
        finish(start(version))

    html = get(operator_client, workflow="tiny", status="succeeded")

    assert 'href="?workflow=tiny&amp;status=succeeded&amp;page=2"' in html


def test_rows_poll_while_a_listed_run_is_active(version, operator_client):
    start(version)

    html = get(operator_client)
    rows = operator_client.get(reverse("console:runs"), headers=HTMX_ROWS)

    assert 'hx-trigger="every 2s"' in html
    assert rows.status_code == 200
    assert rows.content.decode().lstrip().startswith('<tbody id="run-rows" hx-get=')
    assert "<html" not in rows.content.decode()


def test_rows_stop_polling_when_every_listed_run_is_over(version, operator_client):
    finish(start(version))
    finish(start(version), RunStatus.FAILED)

    html = get(operator_client)
    rows = operator_client.get(reverse("console:runs"), headers=HTMX_ROWS)

    assert "hx-trigger" not in html.split("<main", 1)[1]  # the navigation's review badge polls on every page
    assert rows.status_code == 286
    assert "hx-trigger" not in rows.content.decode()
    assert rows.content.decode().count("<tr>") == 2  # the last state is still swapped in


def test_the_polled_rows_keep_the_filters(version, operator_client):
    start(version)

    html = get(operator_client, workflow="tiny", q="")

    assert 'hx-get="/runs/?workflow=tiny&amp;q="' in html


def test_filters_by_who_started_the_run_in_any_case(version, operator, admin, operator_client):
    mine = finish(start(version, operator))
    theirs = finish(start(version, admin))
    nobodys = finish(start(version))  # started by a program without a user

    assert listed_ids(get(operator_client, started_by=operator.username)) == [str(mine.id)]
    assert listed_ids(get(operator_client, started_by=admin.username.upper())) == [str(theirs.id)]
    assert listed_ids(get(operator_client, started_by="nobody-at-all")) == []
    assert str(nobodys.id) in listed_ids(get(operator_client, started_by=""))


def on_day(run, day: str, at: str = "12:00"):
    Run.objects.filter(pk=run.pk).update(created_at=f"{day}T{at}:00+00:00")
    return run


def test_filters_by_creation_day_from_and_to_both_inclusive(version, operator_client):
    early = on_day(finish(start(version)), "2026-03-01", "23:59")
    middle = on_day(finish(start(version)), "2026-03-02", "00:00")
    late = on_day(finish(start(version)), "2026-03-03", "08:30")

    assert set(listed_ids(get(operator_client, **{"from": "2026-03-02"}))) == {str(middle.id), str(late.id)}
    assert set(listed_ids(get(operator_client, to="2026-03-02"))) == {str(early.id), str(middle.id)}
    assert listed_ids(get(operator_client, **{"from": "2026-03-02", "to": "2026-03-02"})) == [str(middle.id)]
    assert listed_ids(get(operator_client, **{"from": "2026-03-04"})) == []


def test_a_day_that_is_not_a_date_filters_nothing_and_says_so(version, operator_client):
    run = finish(start(version))

    html = get(operator_client, **{"from": "yesterday", "to": "2026-13-45"})

    assert listed_ids(html) == [str(run.id)]
    assert "the from and to filters were ignored" in html
    assert 'id="filter-from" name="from" type="date" value="yesterday" aria-invalid="true"' in html


def test_the_filter_form_shows_what_was_asked_and_offers_to_clear_it(version, operator, operator_client):
    finish(start(version, operator))

    html = get(operator_client, started_by=operator.username, **{"from": "2026-01-01", "to": "2026-12-31"})

    assert f'name="started_by" type="search" value="{operator.username}"' in html
    assert 'name="from" type="date" value="2026-01-01"' in html
    assert 'name="to" type="date" value="2026-12-31"' in html
    assert '<a href="/runs/">Clear</a>' in html
    assert '<a href="/runs/">Clear</a>' not in get(operator_client)


def test_pagination_and_polling_keep_the_new_filters(version, operator, operator_client):
    for _ in range(RUNS_PER_PAGE + 1):
        start(version, operator)

    html = get(operator_client, started_by=operator.username, **{"from": "2026-01-01"})

    assert f'href="?started_by={operator.username}&amp;from=2026-01-01&amp;page=2"' in html
    assert f'hx-get="/runs/?started_by={operator.username}&amp;from=2026-01-01"' in html
