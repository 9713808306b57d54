"""Test runs of drafts: any version, published or not, with every model on the simulated provider
(unless real providers are asked for), marked as such, filtered in the runs list and left out of
the overview by default."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.console import overview
from apps.runs.models import ProviderCall, RunStatus
from apps.runs.services import run_start, run_start_test
from apps.workflows.selectors import workflow_get
from tests.api.conftest import signed_in
from tests.factories import definition, llm_node, save_workflow
from tests.runs.helpers import drain

pytestmark = pytest.mark.django_db
FAST = {"latency": "fixed:0", "faults": {}}


def draft_naming_a_real_model():
    """``tiny`` v1 published; v2, a draft whose model is a real provider's (no key configured here)."""
    save_workflow(definition("tiny"))
    return save_workflow(definition("tiny", [llm_node("answer", model="gpt-4o-mini", fallbacks=["gpt-4o"])]), publish=False)


def test_a_draft_test_runs_on_the_simulated_provider_whatever_its_models(admin):
    draft = draft_naming_a_real_model()

    run = drain(run_start_test(workflow=draft.workflow, version_number=draft.number, input={"topic": "tides"}, started_by=admin, simulation=FAST))

    assert (run.status, run.is_test, run.version.number) == (RunStatus.SUCCEEDED, True, 2)
    assert list(ProviderCall.objects.filter(run=run).values_list("provider", "model")) == [("simulated", "gpt-4o-mini")]
    assert workflow_get(name="tiny").published_version.number == 1  # a test run publishes nothing


def test_real_providers_are_used_only_when_asked(admin, settings):
    settings.DAGWRIGHT_PROVIDERS = {"openai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "", "models": ["gpt-*"]}}
    draft = draft_naming_a_real_model()

    run = run_start_test(workflow=draft.workflow, version_number=draft.number, input={"topic": "tides"}, started_by=admin, real_providers=True)

    assert run.is_test
    assert "simulate_all_models" not in run.options


def test_an_ordinary_run_is_not_a_test_run_and_its_options_cannot_force_the_simulation(operator):
    version = save_workflow()
    run = run_start(workflow=version.workflow, input={"topic": "tides"}, started_by=operator)
    assert run.is_test is False

    response = signed_in(operator).post_json("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "x"}, "simulate_all_models": True})
    assert response.status_code == 422


def test_the_runs_list_filters_test_runs(admin, operator):
    draft = draft_naming_a_real_model()
    real = run_start(workflow=draft.workflow, input={"topic": "tides"})
    test = run_start_test(workflow=draft.workflow, version_number=draft.number, input={"topic": "tides"}, simulation=FAST)
    client = signed_in(operator)

    def listed(query: str) -> list[tuple[str, bool]]:
        return [(r["id"], r["is_test"]) for r in client.get(f"/api/v1/runs{query}").json()["items"]]

    assert listed("?is_test=true") == [(str(test.id), True)]
    assert listed("?is_test=false") == [(str(real.id), False)]
    assert {run_id for run_id, _ in listed("")} == {str(real.id), str(test.id)}


def test_the_overview_leaves_test_runs_out_unless_asked(admin):
    draft = draft_naming_a_real_model()
    drain(run_start(workflow=draft.workflow, input={"topic": "tides"}, options={"simulation": FAST}))
    drain(run_start_test(workflow=draft.workflow, version_number=draft.number, input={"topic": "tides"}, simulation=FAST))
    run_start_test(workflow=draft.workflow, version_number=draft.number, input={"topic": "tides"}, simulation=FAST)  # still active
    now, since = timezone.now() + timedelta(seconds=1), timezone.now() - timedelta(hours=1)

    default = overview.overview_get(user=admin, now=now)
    everything = overview.overview_get(user=admin, now=now, include_test_runs=True)

    assert (default.runs.finished_total, everything.runs.finished_total) == (1, 2)
    assert (default.runs.active_total, everything.runs.active_total) == (0, 1)
    assert (default.run_latency.count, everything.run_latency.count) == (1, 2)
    assert sum(b.calls for b in overview.usage_by_bucket(since=since, until=now, bucket="hour")) == 1
    assert sum(b.calls for b in overview.usage_by_bucket(since=since, until=now, bucket="hour", include_test_runs=True)) == 2
