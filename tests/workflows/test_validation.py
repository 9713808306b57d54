"""Models no configured provider serves are refused when a definition is saved or validated, at
their JSON pointer (fallbacks and router models too); validation locates every problem at its
line and column in the text, and a workflow without a published version breaks no page."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from apps.engine.errors import DefinitionError
from apps.providers.models import ModelPrice
from apps.providers.pricing import clear_price_cache
from apps.providers.registry import model_served
from apps.workflows.models import Workflow
from apps.workflows.services import definition_validate, workflow_save
from tests.factories import definition, llm_node

pytestmark = pytest.mark.django_db

OPENAI = {"openai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "", "models": ["gpt-*", "local-exact"]}}


@pytest.fixture
def providers(settings):
    settings.DAGWRIGHT_PROVIDERS = OPENAI
    clear_price_cache()
    yield
    clear_price_cache()


@pytest.mark.parametrize(
    ("model", "served"),
    [
        pytest.param("sim-fast", True, id="simulated"),
        pytest.param("sim-anything", True, id="any-simulated-model"),
        pytest.param("local-exact", True, id="listed-by-name"),
        pytest.param("gpt-4o-mini", True, id="a-prefix-and-a-known-price"),
        pytest.param("gpt-99", False, id="a-prefix-without-a-price"),
        pytest.param("claude-sonnet", False, id="no-provider"),
        pytest.param("", False, id="empty"),
    ],
)
def test_which_models_are_served(providers, model, served):
    assert model_served(model) is served


def test_a_price_row_makes_a_prefix_model_served(providers):
    ModelPrice.objects.create(provider="openai", model="gpt-99", input_per_million=1, output_per_million=2)
    clear_price_cache()
    assert model_served("gpt-99")


def test_an_unserved_model_is_refused_at_each_pointer_and_nothing_is_written(providers):
    router = {
        "id": "route", "type": "router", "depends_on": ["answer"], "routes": ["after"],
        "llm": {"model": "gpt-98", "prompt": "Pick", "min_confidence": 0.5, "low_confidence_route": "after", "fallbacks": ["sim-fast", "nope-2"]},
    }  # fmt: skip
    nodes = [llm_node("answer", model="gpt-99", fallbacks=["sim-mini", "gpt-97"]), router, llm_node("after", depends_on=["route"])]

    with pytest.raises(DefinitionError) as caught:
        workflow_save(spec=definition("models", nodes))

    assert [(p.pointer, p.message) for p in caught.value.problems] == [
        ("/nodes/0/model", "node 'answer': no configured provider serves model 'gpt-99'"),
        ("/nodes/0/fallbacks/1", "node 'answer': no configured provider serves model 'gpt-97'"),
        ("/nodes/1/llm/model", "node 'route': no configured provider serves model 'gpt-98'"),
        ("/nodes/1/llm/fallbacks/1", "node 'route': no configured provider serves model 'nope-2'"),
    ]
    assert not Workflow.objects.exists()


def test_the_demos_and_the_default_settings_models_are_served():
    call_command("load_demos", stdout=StringIO())
    assert Workflow.objects.count() == 4


YAML_TEXT = """\
name: located
nodes:
  - id: draft
    type: llm
    model: gpt-99
    prompt: |
      Write about
      {{ input.topic }}
  - id: review
    type: llm
    model: sim-fast
    prompt: Check
    depends_on: [draft, ghost]
"""


def test_validation_locates_each_problem_in_the_text(providers):
    validation = definition_validate(text=YAML_TEXT)

    assert not validation.ok
    found = {p.pointer: (p.location.line, p.location.column, p.message) for p in validation.problems}
    assert found == {"/nodes/1/depends_on/1": (13, 25, "node 'review': depends on unknown node 'ghost'")}
    fixed = definition_validate(text=YAML_TEXT.replace(", ghost", ""))
    [problem] = fixed.problems
    assert (problem.pointer, problem.location.line, problem.location.column) == ("/nodes/0/model", 5, 5)
    assert definition_validate(text=YAML_TEXT.replace(", ghost", "").replace("gpt-99", "sim-smart")).ok
    assert not Workflow.objects.exists()


def test_validation_reports_a_syntax_error_at_its_line():
    [problem] = definition_validate(text="name: x\nnodes: [\n  {id: a\n").problems
    assert problem.pointer == ""
    assert problem.message.startswith("not valid YAML or JSON:")
    assert problem.location.line == 4


def test_validation_of_a_missing_field_points_at_its_node():
    [problem] = definition_validate(text="name: x\nnodes:\n  - id: a\n    type: llm\n    model: sim-fast\n").problems
    assert (problem.pointer, problem.location.line, problem.location.exact) == ("/nodes/0/prompt", 3, False)


def test_pages_of_a_workflow_without_a_published_version_are_not_404(admin, client):
    workflow_save(spec=definition("drafty"))
    client.force_login(admin)

    detail = client.get(reverse("console:workflow", args=["drafty"]))
    start = client.get(reverse("console:run_start", args=["drafty"]))
    named = client.get(reverse("console:run_start", args=["drafty"]) + "?version=1")
    listed = client.get(reverse("console:workflows"))

    assert detail.status_code == 200
    assert "nothing runs without a version number" in detail.content.decode()
    assert "Start a run" not in detail.content.decode()
    assert start.status_code == 409
    assert 'id="not-published"' in start.content.decode()
    assert named.status_code == 200
    assert "draft v1" in listed.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_migration_publishes_each_workflows_latest_version():
    executor = MigrationExecutor(connection)
    before = [("workflows", "0003_published_version")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    workflow_model, version_model = old.get_model("workflows", "Workflow"), old.get_model("workflows", "WorkflowVersion")
    two = workflow_model.objects.create(name="two")
    for number in (1, 2):
        version_model.objects.create(workflow=two, number=number, content_hash=f"{number}" * 64, definition={})
    workflow_model.objects.create(name="empty")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    workflows = {w.name: w for w in Workflow.objects.select_related("published_version")}
    assert workflows["two"].published_version.number == 2
    assert workflows["two"].published_at == workflows["two"].published_version.created_at
    assert workflows["empty"].published_version is None
