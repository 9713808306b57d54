"""Every model is in the Django admin, and run state there is read-only."""

from __future__ import annotations

import pytest
from django.contrib.admin import site as admin_site
from django.urls import reverse

from apps.api.models import ApiToken
from apps.providers.models import BreakerTransition, CircuitBreakerState
from apps.runs.models import NodeRun, OutboxMessage, ProviderCall, Run, RunEvent
from apps.runs.services import run_start
from apps.workflows.models import Workflow, WorkflowVersion
from tests.factories import save_workflow

pytestmark = pytest.mark.django_db
MODELS = [Workflow, WorkflowVersion, Run, NodeRun, ProviderCall, RunEvent, ApiToken, CircuitBreakerState, BreakerTransition, OutboxMessage]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_model_is_registered_and_its_list_renders(client, admin, model):
    assert admin_site.is_registered(model)
    run_start(workflow=save_workflow().workflow, input={"topic": "admin"})
    ApiToken.issue(user=admin)
    client.force_login(admin)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    response = client.get(url)
    assert response.status_code == 200
    first = model.objects.first()
    if first is not None:
        detail = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[first.pk])
        assert client.get(detail).status_code == 200


@pytest.mark.parametrize("model", [Run, NodeRun, ProviderCall, RunEvent, WorkflowVersion], ids=lambda m: m.__name__)
def test_engine_written_rows_cannot_be_added_or_changed_in_the_admin(rf, admin, model):
    request = rf.get("/")
    request.user = admin
    model_admin = admin_site.get_model_admin(model)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)


def test_no_workflow_is_created_without_a_definition_the_list_links_to_the_editor(client, admin):
    save_workflow()
    client.force_login(admin)

    listed = client.get(reverse("admin:workflows_workflow_changelist")).content.decode()
    added = client.get(reverse("admin:workflows_workflow_add"))

    assert added.status_code == 403
    assert reverse("admin:workflows_workflow_add") not in listed
    assert '<a href="/workflows/new/" id="workflow-editor-link">' in listed
    assert "tiny" in listed
