"""JSON pointers located in YAML and JSON text by the parser's marks: block and flow style,
multi-line strings, anchors, aliases and merge keys; syntax errors with their line and column."""

from __future__ import annotations

import json

import pytest

from apps.engine.sourcemap import SourceSyntaxError, source_map

YAML = """\
name: triage
description: >
  Folded text
  over two lines
nodes:
  - id: classify
    type: llm
    model: sim-fast
    prompt: |
      Classify this:
      {{ input.text }}
    retry: &careful {max_attempts: 5, backoff_seconds: 2}
  - {id: reply, type: llm, model: sim-smart, prompt: "Reply", depends_on: [classify]}
  - id: summary
    type: llm
    model: sim-fast
    prompt: Sum up
    retry: *careful
    depends_on:
      - classify
      - reply
"""


def at(text: str, pointer: str) -> tuple[int, int]:
    found = source_map(text).locate(pointer)
    return found.line, found.column


@pytest.mark.parametrize(
    ("pointer", "line", "column", "text"),
    [
        pytest.param("", 1, 1, "name: triage", id="the-document"),
        pytest.param("/name", 1, 1, "name: triage", id="a-top-level-key"),
        pytest.param("/nodes/0", 6, 5, "id: classify", id="a-sequence-item"),
        pytest.param("/nodes/0/model", 8, 5, "model: sim-fast", id="a-member-from-its-key"),
        pytest.param("/nodes/0/prompt", 9, 5, "prompt: |", id="a-block-scalar"),
        pytest.param("/nodes/0/retry/max_attempts", 12, 22, "max_attempts: 5", id="inside-a-flow-mapping"),
        pytest.param("/nodes/1", 13, 5, "{id: reply", id="a-flow-mapping-item"),
        pytest.param("/nodes/1/model", 13, 28, "model: sim-smart", id="a-flow-member"),
        pytest.param("/nodes/1/depends_on/0", 13, 76, "classify]", id="a-flow-sequence-item"),
        pytest.param("/nodes/2/depends_on/1", 21, 9, "reply", id="a-block-sequence-item-after-others"),
    ],
)
def test_a_pointer_lands_where_the_parser_read_it(pointer, line, column, text):
    assert at(YAML, pointer) == (line, column)
    assert YAML.splitlines()[line - 1][column - 1 :].startswith(text)


def test_a_multi_line_string_spans_its_lines():
    found = source_map(YAML).locate("/nodes/0/prompt")
    assert (found.line, found.end_line) == (9, 12)
    assert YAML[found.offset : found.end_offset].startswith("prompt: |\n      Classify this:\n      {{ input.text }}")


def test_a_folded_description_is_located_from_its_key():
    found = source_map(YAML).locate("/description")
    assert (found.line, found.end_line, found.exact) == (2, 5, True)


def test_an_alias_is_located_where_it_is_written_and_what_it_holds_at_the_anchor():
    assert at(YAML, "/nodes/2/retry") == (18, 5)
    assert at(YAML, "/nodes/2/retry/backoff_seconds") == (12, 39)  # the text to change is the anchor's


def test_merge_keys_are_followed_and_own_keys_win():
    text = "base: &base {model: sim-fast, prompt: Hi}\nnode:\n  <<: *base\n  prompt: Own\n"
    assert at(text, "/node/model") == (1, 14)
    assert at(text, "/node/prompt") == (4, 3)


def test_a_missing_member_is_located_at_its_closest_ancestor():
    found = source_map(YAML).locate("/nodes/0/output_schema/type")
    assert (found.line, found.column, found.exact) == (6, 5, False)
    assert source_map(YAML).locate("/nodes/9").exact is False


def test_a_repeated_key_in_another_node_is_not_confused():
    assert at(YAML, "/nodes/2/model") == (16, 5)
    assert at(YAML, "/nodes/0/model") == (8, 5)


def test_escaped_pointer_tokens():
    text = "schema:\n  a/b: 1\n  c~d: 2\n"
    assert at(text, "/schema/a~1b") == (2, 3)
    assert at(text, "/schema/c~0d") == (3, 3)


def test_json_text_pretty_and_compact():
    data = {"name": "flow", "nodes": [{"id": "a", "type": "llm", "model": "sim-fast", "prompt": "Hi"}, {"id": "b", "depends_on": ["a"]}]}
    pretty = json.dumps(data, indent=2)
    assert at(pretty, "/nodes/1/depends_on/0") == (13, 9)
    assert at(pretty, "/nodes/0/model") == (7, 7)
    compact = json.dumps(data, separators=(",", ":"))
    found = source_map(compact).locate("/nodes/1/depends_on/0")
    assert (found.line, compact[found.offset : found.end_offset]) == (1, '"a"')


def test_an_empty_text_locates_at_the_start():
    found = source_map("").locate("/nodes/0")
    assert (found.line, found.column, found.exact) == (1, 1, False)


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        pytest.param("name: x\nnodes: [a, b\n", 3, 1, id="an-unclosed-flow-sequence"),
        pytest.param("name: x\n  bad: indent\n", 2, 6, id="a-bad-indent"),
        pytest.param('{"name": "x"\n "nodes": []}\n', 2, 2, id="json-missing-a-comma"),
        pytest.param("a: *nowhere\n", 1, 4, id="an-unknown-alias"),
        pytest.param("a: 1\na: [\n", 3, 1, id="at-the-end"),
    ],
)
def test_a_syntax_error_says_where(text, line, column):
    with pytest.raises(SourceSyntaxError) as caught:
        source_map(text)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert caught.value.message


def test_nesting_too_deep_is_a_syntax_error_not_a_crash():
    with pytest.raises(SourceSyntaxError, match="nested too deeply"):
        source_map("[" * 5000 + "]" * 5000)
