"""Factories for the test suite (factory_boy), and definitions small enough to read inline."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from apps.workflows.services import workflow_save

PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def role(self, create: bool, extracted: str | None, **kwargs: Any) -> None:
        if extracted:
            self.groups.add(Group.objects.get_or_create(name=extracted)[0])
        self.save()


def llm_node(node_id: str, prompt: str = "Say something about {{ input.topic }}.", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "llm", "model": "sim-fast", "prompt": prompt, **extra}


def tool_node(node_id: str, tool: str = "text_stats", args: dict | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "tool", "tool": tool, "args": args if args is not None else {"text": "{{ input.topic }}"}, **extra}


def definition(name: str = "tiny", nodes: list[dict] | None = None, **extra: Any) -> dict[str, Any]:
    """A valid definition; by default one llm node fed by a ``topic`` input."""
    return {
        "name": name,
        "description": f"{name} workflow for tests",
        "input_schema": {"type": "object", "required": ["topic"], "properties": {"topic": {"type": "string", "minLength": 1}}},
        "nodes": nodes if nodes is not None else [llm_node("answer")],
        **extra,
    }


def fan_out_definition(name: str = "fan", width: int = 3) -> dict[str, Any]:
    """start -> width parallel branches -> join."""
    branches = [llm_node(f"branch_{i}", f"Angle {i} on {{{{ nodes.start.words }}}} words.", depends_on=["start"]) for i in range(width)]
    join_prompt = " ".join(f"{{{{ nodes.branch_{i} }}}}" for i in range(width))
    return definition(
        name,
        [tool_node("start"), *branches, llm_node("join", join_prompt, depends_on=[b["id"] for b in branches])],
    )


def save_workflow(spec: dict[str, Any] | None = None, *, publish: bool = True, check_models: bool = True):
    """Save a definition, published unless told otherwise, and return its version.

    ``check_models=False`` saves models no provider serves, for tests of what a run does with them.
    """
    version, _ = workflow_save(spec=spec or definition(), publish=publish, check_models=check_models)
    return version
