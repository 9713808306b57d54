"""Saving workflows as immutable, content-addressed versions, and reading definitions from text."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command

from apps.engine import definition as engine_definition
from apps.engine.errors import DefinitionError
from apps.workflows.models import VersionImmutable, Workflow, WorkflowVersion
from apps.workflows.services import definition_parse_text, workflow_save
from tests.engine.defs import reverse_keys
from tests.factories import definition, llm_node, tool_node

DEMOS = sorted((Path(__file__).resolve().parents[2] / "apps" / "workflows" / "demos").glob("*.yaml"))

pytestmark = pytest.mark.django_db


def _rows() -> tuple[int, int]:
    return Workflow.objects.count(), WorkflowVersion.objects.count()


def test_first_save_creates_the_workflow_and_version_one() -> None:
    raw = definition("tiny")

    version, created = workflow_save(spec=raw)

    assert created is True
    assert version.number == 1
    assert version.workflow.name == "tiny"
    assert version.workflow.description == "tiny workflow for tests"
    spec = engine_definition.load(raw).spec
    assert version.content_hash == engine_definition.spec_hash(spec)
    assert version.definition == engine_definition.dump(spec)
    assert version.created_by is None


def test_the_same_definition_in_another_key_order_reuses_its_version() -> None:
    first, _ = workflow_save(spec=definition("tiny"))
    reordered = reverse_keys(definition("tiny"))
    assert list(reordered) != list(definition("tiny"))

    again, created = workflow_save(spec=reordered)

    assert created is False
    assert again.pk == first.pk
    assert _rows() == (1, 1)


def test_a_parsed_spec_is_accepted_too() -> None:
    first, _ = workflow_save(spec=definition("tiny"))

    again, created = workflow_save(spec=engine_definition.load(definition("tiny")).spec)

    assert (again.pk, created) == (first.pk, False)


def test_a_changed_definition_makes_the_next_version() -> None:
    workflow_save(spec=definition("tiny"))
    changed = definition("tiny", [llm_node("answer", "Say it shorter: {{ input.topic }}")], description="now shorter")

    version, created = workflow_save(spec=changed)

    assert created is True
    assert version.number == 2
    assert list(version.workflow.versions.values_list("number", flat=True)) == [2, 1]
    assert Workflow.objects.get(name="tiny").description == "now shorter"


def test_versions_are_numbered_per_workflow() -> None:
    workflow_save(spec=definition("first"))
    workflow_save(spec=definition("first", [llm_node("other")]))

    version, _ = workflow_save(spec=definition("second"))

    assert version.number == 1
    assert _rows() == (2, 3)


def test_the_saving_user_is_recorded(admin) -> None:
    version, _ = workflow_save(spec=definition("tiny"), user=admin)

    assert version.created_by == admin
    assert version.workflow.created_by == admin


@pytest.mark.parametrize(
    ("raw", "pointer"),
    [
        pytest.param(definition("tiny", [llm_node("a", depends_on=["a"])]), "/nodes/0/depends_on", id="cycle"),
        pytest.param(definition("tiny", [tool_node("a", tool="shell")]), "/nodes/0/tool", id="unknown-tool"),
        pytest.param(definition("tiny", []), "/nodes", id="no-nodes"),
        pytest.param(definition("Not A Name"), "/name", id="bad-name"),
    ],
)
def test_a_bad_definition_writes_nothing(raw: dict[str, Any], pointer: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        workflow_save(spec=raw)

    assert caught.value.problems[0].pointer == pointer
    assert _rows() == (0, 0)


def test_a_bad_new_version_leaves_the_workflow_as_it_was() -> None:
    version, _ = workflow_save(spec=definition("tiny"))

    with pytest.raises(DefinitionError):
        workflow_save(spec=definition("tiny", [llm_node("answer", "{{ nodes.ghost }}")], description="broken"))

    assert _rows() == (1, 1)
    assert Workflow.objects.get().description == version.workflow.description


def test_versions_are_immutable() -> None:
    version, _ = workflow_save(spec=definition("tiny"))
    version.definition = {"tampered": True}

    with pytest.raises(VersionImmutable):
        version.save()

    assert WorkflowVersion.objects.get(pk=version.pk).definition["name"] == "tiny"


def test_definition_parse_text_reads_yaml() -> None:
    text = "name: tiny\nnodes:\n  - id: answer\n    type: llm\n    model: sim-fast\n    prompt: 'Hi {{ input.topic }}'\n"

    assert definition_parse_text(text=text) == {
        "name": "tiny",
        "nodes": [{"id": "answer", "type": "llm", "model": "sim-fast", "prompt": "Hi {{ input.topic }}"}],
    }


def test_definition_parse_text_reads_json() -> None:
    raw = definition("tiny")

    assert definition_parse_text(text=json.dumps(raw, indent=2)) == raw


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("name: [unclosed", "not valid YAML or JSON", id="invalid-yaml"),
        pytest.param('{"name": "tiny", "nodes": [}', "not valid YAML or JSON", id="invalid-json"),
        pytest.param("name: a\n  bad: indent\n- x", "not valid YAML or JSON", id="bad-indentation"),
        pytest.param("[" * 5000 + "]" * 5000, "nested too deeply", id="nested-too-deeply"),
        pytest.param("- name: tiny\n", "must be a mapping", id="a-list"),
        pytest.param("just words", "must be a mapping", id="a-scalar"),
        pytest.param("", "must be a mapping", id="empty"),
        pytest.param("name: tiny\ndescription: " + "x" * engine_definition.MAX_DEFINITION_BYTES, "over the limit", id="oversized"),
    ],
)
def test_definition_parse_text_refuses_bad_text(text: str, fragment: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        definition_parse_text(text=text)

    [problem] = caught.value.problems
    assert problem.pointer == ""
    assert fragment in problem.message


def test_yaml_values_that_are_not_json_are_refused_with_a_pointer() -> None:
    raw = definition_parse_text(text="name: tiny\ndescription: 2026-01-02\nnodes:\n  - {id: a, type: llm, model: sim-fast, prompt: hi}\n")

    with pytest.raises(DefinitionError) as caught:
        workflow_save(spec=raw)

    assert [(p.pointer, p.message) for p in caught.value.problems] == [("/description", "a date is not JSON data")]
    assert _rows() == (0, 0)


def test_there_are_four_demos() -> None:
    assert [p.name for p in DEMOS] == ["article-brief.yaml", "meeting-actions.yaml", "support-reply.yaml", "support-triage.yaml"]


@pytest.mark.parametrize("path", DEMOS, ids=lambda p: p.stem)
def test_demo_definition_loads_and_saves(path: Path) -> None:
    raw = definition_parse_text(text=path.read_text())

    version, created = workflow_save(spec=raw)

    assert created is True
    assert version.workflow.name == path.stem
    assert version.plan.order[0] in {n["id"] for n in raw["nodes"]}
    assert yaml.safe_load(path.read_text()) == raw


def test_load_demos_is_idempotent() -> None:
    first, second = StringIO(), StringIO()

    call_command("load_demos", stdout=first)
    call_command("load_demos", stdout=second)

    names = ["article-brief", "meeting-actions", "support-reply", "support-triage"]
    assert first.getvalue().splitlines() == [f"{name} v1 created, published" for name in names]
    assert second.getvalue().splitlines() == [f"{name} v1 unchanged, published" for name in names]
    assert _rows() == (4, 4)
