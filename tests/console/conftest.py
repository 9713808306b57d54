"""Fixtures for the operator pages: saved workflows and a signed-in operator."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.workflows.models import WorkflowVersion
from tests.factories import definition, llm_node, save_workflow, tool_node

from .helpers import signed_in


@pytest.fixture
def operator_client(operator) -> Client:
    return signed_in(operator)


@pytest.fixture
def version(db) -> WorkflowVersion:
    """``tiny``: one llm node fed by a required ``topic``."""
    return save_workflow()


@pytest.fixture
def form_version(db) -> WorkflowVersion:
    """A workflow whose input schema has one property of every kind the form generates."""
    schema = {
        "type": "object",
        "required": ["title", "body", "tone"],
        "properties": {
            "title": {"type": "string", "minLength": 3, "maxLength": 80, "description": "Shown on the brief."},
            "body": {"type": "string", "minLength": 5},
            "tone": {"enum": ["neutral", "friendly", "formal"]},
            "words": {"type": "integer", "minimum": 10, "maximum": 500, "default": 100},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "urgent": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    return save_workflow(definition("brief", [llm_node("write", "Write about {{ input.title }}.")], input_schema=schema))


@pytest.fixture
def chain_version(db) -> WorkflowVersion:
    """``chain``: a tool node, then an llm node that depends on it."""
    nodes = [tool_node("measure"), llm_node("answer", "Words: {{ nodes.measure.words }}", depends_on=["measure"])]
    return save_workflow(definition("chain", nodes))
