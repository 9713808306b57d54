"""Sandboxed templating: what templates can read, what they cannot do, and how big they get."""

from __future__ import annotations

import pytest

from apps.engine import templating
from apps.engine.errors import TemplateError

CONTEXT = {
    "input": {"topic": "otters", "count": 3, "tags": ["river", "fur"], "items": ["a", "b"]},
    "nodes": {"facts": {"claims": ["they hold hands", "they use tools"], "score": 0.9}, "draft": "Otters are great."},
}


def test_render_reads_input_and_upstream_nodes() -> None:
    text = templating.render("{{ input.topic }}: {{ nodes.facts.claims[0] }} ({{ nodes['draft'] }})", CONTEXT)

    assert text == "otters: they hold hands (Otters are great.)"


def test_render_supports_loops_filters_and_tojson() -> None:
    source = "{% for tag in input.tags %}{{ loop.index }}={{ tag | upper }} {% endfor %}{{ nodes.facts | tojson }}"

    text = templating.render(source, CONTEXT)

    assert text == '1=RIVER 2=FUR {"claims": ["they hold hands", "they use tools"], "score": 0.9}'


def test_render_does_not_autoescape_prompts() -> None:
    assert templating.render("{{ input.topic }}", {"input": {"topic": "<b>&</b>"}}) == "<b>&</b>"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        pytest.param("{{ missing }}", "'missing' is undefined", id="unknown-name"),
        pytest.param("{{ input.nope }}", "has no attribute 'nope'", id="unknown-input-key"),
        pytest.param("{{ nodes.ghost }}", "has no attribute 'ghost'", id="node-not-in-context"),
        pytest.param("{% for x in input.nope %}{% endfor %}", "has no attribute 'nope'", id="iterate-undefined"),
        pytest.param("{{ input.nope | length }}", "has no attribute 'nope'", id="filter-on-undefined"),
        pytest.param("{% if input.nope %}yes{% endif %}", "has no attribute 'nope'", id="test-undefined"),
    ],
)
def test_strict_undefined_fails_loudly(source: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        templating.render(source, CONTEXT)


def test_default_filter_is_the_way_to_allow_a_missing_value() -> None:
    assert templating.render("{{ input.nope | default('none given') }}", CONTEXT) == "none given"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{{ ''.__class__.__mro__ }}", id="str-class-mro"),
        pytest.param("{{ ''.__class__.__mro__[1].__subclasses__() }}", id="object-subclasses"),
        pytest.param("{{ cycler.__init__.__globals__ }}", id="cycler-globals"),
        pytest.param("{{ lipsum.__globals__['os'] }}", id="lipsum-globals"),
        pytest.param("{{ input.__class__ }}", id="dict-class"),
        pytest.param("{{ input['__class__'] }}", id="subscript-dunder"),
        pytest.param("{{ nodes | attr('__class__') }}", id="attr-filter-dunder"),
        pytest.param("{{ input.update({}) }}", id="dict-update"),
        pytest.param("{{ input.tags.append('x') }}", id="list-append"),
        pytest.param("{{ nodes.facts.claims.clear() }}", id="list-clear"),
        pytest.param("{{ input | attr('pop') }}", id="attr-filter-mutation"),
        pytest.param("{{ input.tags.__len__() }}", id="dunder-call"),
    ],
)
def test_sandbox_blocks_escapes_and_mutation(source: str) -> None:
    before = repr(CONTEXT)

    with pytest.raises(TemplateError):
        templating.render(source, CONTEXT)

    assert repr(CONTEXT) == before


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{{ 1 / 0 }}", id="division-by-zero"),
        pytest.param("{{ range(10 ** 6) | list | length }}", id="range-too-big"),
        pytest.param("{{ 9 ** (9 ** 9) }}", id="huge-power"),
        pytest.param("{{ 'ab' * 10 ** 9 }}", id="huge-repetition"),
        pytest.param("{{ [1, 2] * 10 ** 9 }}", id="huge-list-repetition"),
        pytest.param("{{ input.topic + 1 }}", id="type-error"),
        pytest.param("{{ input.tags[1:]['x'] }}", id="bad-subscript"),
        pytest.param("{{ input.topic | nosuchfilter }}", id="unknown-filter"),
        pytest.param("{% macro again() %}{{ again() }}{% endmacro %}{{ again() }}", id="endless-recursion"),
        pytest.param("{{ input.topic ", id="syntax-error"),
    ],
)
def test_run_time_failures_are_template_errors(source: str) -> None:
    with pytest.raises(TemplateError):
        templating.render(source, CONTEXT)


def test_reasonable_arithmetic_still_works() -> None:
    assert templating.render("{{ 2 ** 10 }} {{ '-' * 3 }} {{ [0] * 2 }} {{ 3 * 4 }}", CONTEXT) == "1024 --- [0, 0] 12"


def test_rendered_size_is_limited() -> None:
    context = {"input": {"chunk": "x" * 1000}}
    limit = templating.MAX_RENDERED_CHARS

    assert len(templating.render("{% for _ in range(200) %}{{ input.chunk }}{% endfor %}", context)) == limit
    with pytest.raises(TemplateError, match=f"over {limit}"):
        templating.render("{% for _ in range(201) %}{{ input.chunk }}{% endfor %}", context)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("{{ nodes.facts }}", CONTEXT["nodes"]["facts"], id="whole-expression-keeps-a-dict"),
        pytest.param("{{ input.count }}", 3, id="whole-expression-keeps-an-int"),
        pytest.param("  {{ input.tags }}\n", ["river", "fur"], id="surrounding-space-ignored"),
        pytest.param("{{ input['items'] }}", ["a", "b"], id="subscript-reaches-keys-named-like-methods"),
        pytest.param("{{ input.nope | default(none) }}", None, id="default-none"),
        pytest.param("{{ input.count }} otters", "3 otters", id="mixed-text-renders-a-string"),
        pytest.param("{{ input.topic }}{{ input.count }}", "otters3", id="two-expressions-render-a-string"),
        pytest.param("no template here", "no template here", id="plain-string"),
        pytest.param("{ braces } only", "{ braces } only", id="braces-are-not-templates"),
        pytest.param(["{{ input.count }}", 7, None, {"k": "{{ nodes.draft }}"}], [3, 7, None, {"k": "Otters are great."}], id="nested-containers"),
        pytest.param(4.5, 4.5, id="non-string-kept"),
    ],
)
def test_render_value(value: object, expected: object) -> None:
    assert templating.render_value(value, CONTEXT) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("{{ ghost }}", "'ghost' is undefined", id="bare-undefined-name"),
        pytest.param("{{ input.nope }}", "has no attribute 'nope'", id="undefined-attribute"),
        pytest.param("{{ [input.nope] }}", "has no attribute 'nope'", id="undefined-inside-a-list"),
        pytest.param({"deep": ["{{ {'a': nodes.facts.nope} }}"]}, "has no attribute 'nope'", id="undefined-inside-a-dict"),
        pytest.param("{{ input.items }}", "not JSON data", id="a-method-is-not-an-argument"),
        pytest.param("{{ ''.__class__ }}", "unsafe", id="sandbox-escape"),
        pytest.param("{{ input.update({}) }}", "unsafe", id="mutation"),
        pytest.param("{{ 1 / 0 }}", "division by zero", id="arithmetic-error"),
        pytest.param("{{ 'x' * 150000 ~ 'y' * 150000 }}", "over", id="string-over-the-size-limit"),
    ],
)
def test_render_value_errors(value: object, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        templating.render_value(value, CONTEXT)


def test_syntax_error_reports_the_line() -> None:
    assert templating.syntax_error("ok\n{{ broken") == "line 2: unexpected end of template, expected 'end of print statement'."
    assert templating.syntax_error("{{ fine }}") is None


def test_referenced_names_and_nodes() -> None:
    names, node_ids = templating.referenced_names(["{{ input.a }} {{ nodes.x.y }} {{ nodes['z'] }} {% set s = 1 %}{{ s }} {{ other }}"])

    assert names == {"input", "nodes", "other"}
    assert node_ids == {"x", "z"}


def test_template_sources_finds_templates_in_nested_arguments() -> None:
    args = {"a": "plain", "b": ["{{ input.x }}", {"c": "{% if input.y %}y{% endif %}"}], "d": 3}

    assert templating.template_sources(args) == ["{{ input.x }}", "{% if input.y %}y{% endif %}"]
