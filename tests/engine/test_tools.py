"""The built-in tools, with good and bad arguments."""

from __future__ import annotations

from typing import Any

import pytest

from apps.engine.tools import TOOLS, ToolArgumentError, ToolContext

CONTEXT = ToolContext(run_id="run-1", node_id="node", idempotency_key="run-1:node")


def call(name: str, **args: Any) -> Any:
    return TOOLS[name](**args, context=CONTEXT)


def test_the_built_in_tools_are_registered() -> None:
    assert {"text_stats", "json_merge", "json_pick", "render"} <= set(TOOLS)


def test_text_stats_counts_text() -> None:
    stats = call("text_stats", text="Otters hold hands. Otters sleep!\nRivers flow? yes")

    assert stats == {"characters": 49, "words": 8, "sentences": 3, "lines": 2, "top_words": ["otters", "flow", "hands", "hold", "rivers"]}


@pytest.mark.parametrize(
    ("text", "sentences", "lines"),
    [
        pytest.param("", 0, 0, id="empty"),
        pytest.param("   ", 0, 1, id="blank"),
        pytest.param("no full stop", 1, 1, id="one-unfinished-sentence"),
        pytest.param("a\nb\n", 1, 3, id="trailing-newline"),
    ],
)
def test_text_stats_edges(text: str, sentences: int, lines: int) -> None:
    stats = call("text_stats", text=text)

    assert (stats["sentences"], stats["lines"], stats["characters"]) == (sentences, lines, len(text))


def test_json_merge_deep_merges_later_objects_winning() -> None:
    merged = call("json_merge", objects=[{"a": {"x": 1, "y": 1}, "keep": True}, {"a": {"y": 2, "z": 3}}, {"b": [1]}])

    assert merged == {"a": {"x": 1, "y": 2, "z": 3}, "keep": True, "b": [1]}


def test_json_merge_does_not_change_its_arguments() -> None:
    first, second = {"a": {"x": 1}}, {"a": {"y": 2}}

    call("json_merge", objects=[first, second])

    assert first == {"a": {"x": 1}}
    assert second == {"a": {"y": 2}}


def test_json_merge_replaces_a_value_that_is_not_an_object() -> None:
    assert call("json_merge", objects=[{"a": {"x": 1}}, {"a": 5}]) == {"a": 5}
    assert call("json_merge", objects=[]) == {}


def test_json_pick_follows_dotted_paths() -> None:
    value = {"items": [{"owner": "ann"}, {"owner": "bo"}], "decisions": ["ship"], "1": "key named one"}

    picked = call("json_pick", value=value, paths=["items.1.owner", "decisions.0", "items.9.owner", "missing", "decisions.-1", "1"])

    assert picked == {"items.1.owner": "bo", "decisions.0": "ship", "items.9.owner": None, "missing": None, "decisions.-1": None, "1": "key named one"}


def test_render_tool_renders_its_template_with_the_other_arguments() -> None:
    text = call("render", template="Hello {{ team }}:{% for i in items %} {{ i.task }}{% endfor %}", team="crew", items=[{"task": "a"}, {"task": "b"}])

    assert text == "Hello crew: a b"


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        pytest.param("text_stats", {"text": 42}, "'text' to be a string", id="text-stats-number"),
        pytest.param("text_stats", {"text": None}, "'text' to be a string", id="text-stats-null"),
        pytest.param("json_merge", {"objects": {"a": 1}}, "list of objects", id="json-merge-object"),
        pytest.param("json_merge", {"objects": [{"a": 1}, "b"]}, "list of objects", id="json-merge-list-with-a-string"),
        pytest.param("json_pick", {"value": {}, "paths": "a.b"}, "list of dotted strings", id="json-pick-path-string"),
        pytest.param("json_pick", {"value": {}, "paths": ["a", 1]}, "list of dotted strings", id="json-pick-path-number"),
        pytest.param("render", {"template": ["x"]}, "'template' to be a string", id="render-template-list"),
        pytest.param("render", {"template": "{{ missing }}"}, "'missing' is undefined", id="render-undefined"),
        pytest.param("render", {"template": "{% if %}"}, "template failed", id="render-syntax-error"),
        pytest.param("render", {"template": "{{ ''.__class__.__mro__ }}"}, "unsafe", id="render-sandbox-escape"),
        pytest.param("render", {"template": "{{ items.append(1) }}", "items": []}, "unsafe", id="render-mutation"),
        pytest.param("render", {"template": "{{ 1 / n }}", "n": 0}, "division by zero", id="render-arithmetic"),
        pytest.param("render", {"template": "{% for _ in range(300) %}{{ chunk }}{% endfor %}", "chunk": "x" * 1000}, "over 200000", id="render-size-limit"),
    ],
)
def test_bad_arguments_are_tool_argument_errors(name: str, args: dict[str, Any], reason: str) -> None:
    with pytest.raises(ToolArgumentError, match=reason):
        call(name, **args)


def test_missing_or_unknown_arguments_are_type_errors() -> None:
    # the executor classifies a TypeError from the call itself as a tool argument error
    with pytest.raises(TypeError):
        call("text_stats")
    with pytest.raises(TypeError):
        call("json_merge", objects=[], extra=1)
