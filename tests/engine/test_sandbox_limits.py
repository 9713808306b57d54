"""The sandbox bounds the work a template does, not only what it returns (issue 11, point 3).

Each attack below was measured on the plain sandbox (a 65-million-bit integer, a 6.4-million-item
list, 100 MB strings before the length check, 10^8 loop iterations); each is now refused before it
allocates or spins, with the limit named. Memory is asserted with tracemalloc; no timings here.
"""

from __future__ import annotations

import tracemalloc

import pytest

from apps.engine import sandbox, templating
from apps.engine.errors import TemplateError

BIG = "{% set big = 'x' * 100000 %}"
ATTACKS = [
    pytest.param(
        "{% set ns = namespace(x=10**1000) %}{% for _ in range(100) %}{% set ns.x = ns.x * ns.x %}{% endfor %}", "MAX_INT_BITS", id="int-multiplication"
    ),
    pytest.param("{{ 9 ** (9 ** 9) }}", "MAX_INT_BITS", id="exponent"),
    pytest.param("{% set ns = namespace(l=[1]) %}{% for _ in range(30) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "MAX_VALUE_SIZE", id="list-growth"),
    pytest.param("{% set ns = namespace(s='a') %}{% for _ in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "MAX_VALUE_SIZE", id="plus-concatenation"),
    pytest.param("{% set ns = namespace(s='a') %}{% for _ in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "MAX_VALUE_SIZE", id="tilde-concatenation"),
    pytest.param("{{ 'a' * 10**10 }}", "MAX_VALUE_SIZE", id="repetition"),
    pytest.param("{{ 'a'.ljust(10**8) }}", "MAX_VALUE_SIZE", id="ljust"),
    pytest.param("{{ 'a'.center(10**8) }}", "MAX_VALUE_SIZE", id="center-method"),
    pytest.param("{{ 'a'|center(10**8) }}", "MAX_VALUE_SIZE", id="center-filter"),
    pytest.param("{{ 'a'.zfill(10**8) }}", "MAX_VALUE_SIZE", id="zfill"),
    pytest.param("{{ '%100000000s' % 'a' }}", "MAX_VALUE_SIZE", id="percent-format"),
    pytest.param("{{ '%*d' % (10**8, 1) }}", "'*' width", id="percent-star-width"),
    pytest.param("{{ '%s' * 60000 % (('y' * 100000),) * 60000 }}", "MAX_VALUE_SIZE", id="percent-many-fields"),
    pytest.param("{{ '%100000000s'|format('a') }}", "MAX_VALUE_SIZE", id="format-filter"),
    pytest.param("{{ '{:>100000000}'.format('a') }}", "MAX_VALUE_SIZE", id="str-format-width"),
    pytest.param("{{ '{:.100000000f}'.format(1.5) }}", "MAX_VALUE_SIZE", id="str-format-precision"),
    pytest.param("{{ lipsum(10000, max=10000) }}", "MAX_LIPSUM_WORDS", id="lipsum"),
    pytest.param("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "MAX_LOOP_ITERATIONS", id="nested-loops"),
    pytest.param(
        "{% for x in [1] recursive %}{% for y in range(100000) %}{% endfor %}{{ loop([1, 2]) }}{% endfor %}",
        "MAX_LOOP_ITERATIONS|recursion",
        id="recursive-loop",
    ),
    pytest.param(BIG + "{{ [big] * 100000 }}", "MAX_VALUE_SIZE", id="print-repeated-references"),
    pytest.param(BIG + "{{ ([big] * 100000)|join }}", "MAX_WORK|MAX_VALUE_SIZE", id="join-repeated-references"),
    pytest.param(BIG + "{{ 'x'.join([big] * 100000) }}", "MAX_WORK|MAX_VALUE_SIZE", id="str-join-repeated-references"),
    pytest.param(BIG + "{{ ([big] * 100000)|tojson }}", "MAX_VALUE_SIZE", id="tojson-repeated-references"),
    pytest.param(BIG + "{{ ([big] * 100000) ~ '' }}", "MAX_VALUE_SIZE", id="tilde-repeated-references"),
    pytest.param(
        "{% set a = ['x' * 100000] %}{% set a = [a,a,a,a,a,a,a,a,a,a] %}{% set a = [a,a,a,a,a,a,a,a,a,a] %}{{ a }}", "MAX_VALUE_SIZE", id="nested-literals"
    ),
    pytest.param(BIG + "{{ big.replace('x', big) }}", "MAX_VALUE_SIZE", id="replace-method"),
    pytest.param(BIG + "{{ big|replace('x', big) }}", "MAX_VALUE_SIZE", id="replace-filter"),
    pytest.param("{{ ('\\n' * 100000)|indent(100000) }}", "MAX_VALUE_SIZE", id="indent"),
    pytest.param("{{ (1).to_bytes(10**9, 'big') }}", "MAX_VALUE_SIZE", id="to-bytes"),
    pytest.param("{{ [1]|batch(10**8, 0)|list }}", "MAX_VALUE_SIZE", id="batch-fill"),
    pytest.param("{{ [1]|slice(10**8)|list }}", "MAX_VALUE_SIZE", id="slice-filter"),
    pytest.param("{% set l = ['x'] * 100000 %}{{ ([l] * 1000)|sum(start=[]) }}", "MAX_VALUE_SIZE", id="sum-of-lists"),
    pytest.param(
        BIG + "{% set ns = namespace(l=[]) %}{% for _ in range(10000) %}{% set ns.l = ns.l + [big.upper()] %}{% endfor %}", "MAX_WORK", id="loop-of-copies"
    ),
    pytest.param(
        BIG + "{% set ns = namespace(l=[]) %}{% for _ in range(10000) %}{% set ns.l = ns.l + [big[1:]] %}{% endfor %}", "MAX_WORK", id="loop-of-slices"
    ),
    pytest.param(BIG + "{% for _ in range(100000) %}{{ big }}{% endfor %}", "over 200000 characters", id="streamed-output"),
]
PEAK_BYTES = 20_000_000  # the largest legitimate value is 200,000 items (a list of them: 1.6 MB); a few of those at once


@pytest.mark.parametrize(("source", "limit"), ATTACKS)
def test_a_resource_attack_is_refused_with_its_limit_named_before_it_allocates(source: str, limit: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError, match=limit):
            templating.render(source, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES


def test_a_macro_calling_itself_twice_runs_out_of_work() -> None:
    """2^30 calls, each small: the per-call charge stops it (no tracemalloc: it slows calls tenfold)."""
    source = "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(30) }}"
    with pytest.raises(TemplateError, match="MAX_WORK"):
        templating.render(source, {})


@pytest.mark.parametrize(
    ("expression", "limit"),
    [
        pytest.param("'a' * 10**10", "MAX_VALUE_SIZE", id="repetition"),
        pytest.param("[1] * 300000", "MAX_VALUE_SIZE", id="list-repetition"),
        pytest.param("'a'.ljust(10**8)", "MAX_VALUE_SIZE", id="ljust"),
        pytest.param("10**2000 * 10**2000", "MAX_INT_BITS", id="int-multiplication"),
        pytest.param("lipsum(100000)", "MAX_LIPSUM_WORDS", id="lipsum"),
    ],
)
def test_tool_arguments_and_routing_expressions_are_bounded_too(expression: str, limit: str) -> None:
    with pytest.raises(TemplateError, match=limit):
        templating.render_value("{{ " + expression + " }}", {})
    with pytest.raises(TemplateError, match=limit):
        templating.evaluate_condition(expression, {})


def test_each_render_has_its_own_budget() -> None:
    """A template that spends most of the loop budget renders again and again: nothing carries over."""
    half = "{% for _ in range(" + str(sandbox.MAX_LOOP_ITERATIONS // 2 - 5) + ") %}{% endfor %}"
    source = half + half + "done"
    assert [templating.render(source, {}) for _ in range(3)] == ["done"] * 3


@pytest.mark.parametrize(
    ("source", "context", "expected"),
    [
        pytest.param("{% for i in input.things %}{{ loop.index }}. {{ i }}\n{% endfor %}", {"input": {"things": ["a", "b"]}}, "1. a\n2. b\n", id="loop"),
        pytest.param("{{ input.things|join(', ') }} {{ input.things|length }}", {"input": {"things": ["a", "b"]}}, "a, b 2", id="join"),
        pytest.param("{{ '%-5s|' % 'ab' }}{{ '{:>4}'.format(7) }}{{ 'x'|center(5) }}", {}, "ab   |   7  x  ", id="padding"),
        pytest.param("{{ ('ab' * 3)[1:4] ~ '!' }} {{ 2 ** 10 * 3 }} {{ [1, 2] + [3] }}", {}, "bab! 3072 [1, 2, 3]", id="operators"),
        pytest.param("{{ input.text|replace('a', 'b')|indent(2, first=True) }}", {"input": {"text": "aa\naa"}}, "  bb\n  bb", id="filters"),
        pytest.param("{% for x in [[1, [2]]] recursive %}{{ x if x is number else loop(x) }}{% endfor %}", {}, "12", id="recursive-loop"),
        pytest.param("{{ input|tojson }}", {"input": {"b": 1, "a": [1]}}, '{"a": [1], "b": 1}', id="tojson"),
    ],
)
def test_ordinary_templates_render_as_before(source: str, context: dict, expected: str) -> None:
    assert templating.render(source, context) == expected
