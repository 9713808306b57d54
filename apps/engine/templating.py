"""Prompt and argument templating in Jinja2's sandbox.

Templates see two names: ``input`` (the run input) and ``nodes`` (a mapping from upstream node
id to that node's validated output), besides Jinja's own (``loop`` inside a for, ``range``,
``namespace``...). Anything else is undefined and fails loudly, so a typo never silently renders
an empty prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .canonical import not_json_data
from .errors import TemplateError
from .sandbox import MAX_VALUE_SIZE, BoundedSandbox, work_limited

TEMPLATE_NAMES = frozenset({"input", "nodes"})
MAX_RENDERED_CHARS = MAX_VALUE_SIZE
MAX_ARGUMENT_VALUES = 1_000_000
# What a sandboxed template can raise at run time: Jinja's own errors, and the ordinary errors of
# the Python operations it performs ({{ 1/0 }}, {{ range(10**9) }}, {{ 'a' + 1 }}, a macro that
# calls itself). Each is the template's fault, so the node fails for good instead of the worker.
RENDER_ERRORS = (JinjaError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError)
_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


def _tojson(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed environment: no attribute tricks, no mutation, strict undefined."""
    env = BoundedSandbox(undefined=StrictUndefined, autoescape=False)
    env.add_filter("tojson", _tojson)
    return env


@lru_cache(maxsize=512)
def _compile(source: str):
    return environment().from_string(source)


@lru_cache(maxsize=512)
def _compile_expression(source: str):
    return environment().compile_expression(source, undefined_to_none=False)


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context``; raises TemplateError with a readable reason."""
    parts: list[str] = []
    size = 0
    try:
        with work_limited():
            for part in _compile(source).generate(**context):  # streamed: a long loop stops at the limit, not after
                size += len(part)
                if size > MAX_RENDERED_CHARS:
                    raise TemplateError(f"rendered text is over {MAX_RENDERED_CHARS} characters")
                parts.append(part)
    except RENDER_ERRORS as exc:
        raise TemplateError(str(exc)) from exc
    return "".join(parts)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render a tool argument: ``"{{ expr }}"`` alone yields the expression's value (a dict stays a
    dict), any other string is rendered as text, and lists and dicts are rendered item by item."""
    if isinstance(value, str):
        match = _WHOLE_EXPRESSION.match(value)
        if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
            return _evaluate(match["expr"].strip(), context)
        return render(value, context) if "{" in value else value
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def _evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """The value of one expression; it must be JSON data, as it becomes a tool's argument."""
    try:
        with work_limited():
            value = _compile_expression(expression)(**context)
            found = not_json_data(value, max_values=MAX_ARGUMENT_VALUES)
            if found and isinstance(bad := _at(value, found[0]), Undefined):
                str(bad)  # a strict undefined only fails when it is used: this use makes it fail
    except RENDER_ERRORS as exc:
        raise TemplateError(str(exc)) from exc
    if found:
        raise TemplateError(f"{{{{ {expression} }}}} is not JSON data: {found[1]}")
    if isinstance(value, str) and len(value) > MAX_RENDERED_CHARS:
        raise TemplateError(f"rendered text is {len(value)} characters, over {MAX_RENDERED_CHARS}")
    return value


def _at(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value


def syntax_error(source: str) -> str | None:
    """The syntax error in ``source``, or None when it parses."""
    try:
        environment().parse(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None


def referenced_names(sources: Iterable[str], *, expressions: bool = False) -> tuple[set[str], set[str]]:
    """Names a template reads from its context, and node ids it references (``nodes.x``, ``nodes['x']``).

    Returns ``(names, node_ids)``. Names follow Jinja's scoping: a loop variable is only defined
    inside its loop and a ``set`` only after it; ``loop`` inside a for and Jinja's globals
    (``range``, ``namespace``) are not context names. A dynamic lookup such as
    ``nodes[some_var]`` cannot be checked here; at run time ``nodes`` only holds upstream
    outputs, so it still cannot reach further. With ``expressions`` the sources are routing
    expressions (``input.tier == 'gold'``), not templates.
    """
    names: set[str] = set()
    node_ids: set[str] = set()
    env = environment()
    for source in sources:
        tree = _parse_expression(source) if expressions else env.parse(source)
        names |= meta.find_undeclared_variables(tree)
        for getattr_ in tree.find_all(nodes.Getattr):
            if isinstance(getattr_.node, nodes.Name) and getattr_.node.name == "nodes":
                node_ids.add(getattr_.attr)
        for getitem in tree.find_all(nodes.Getitem):
            if isinstance(getitem.node, nodes.Name) and getitem.node.name == "nodes" and isinstance(getitem.arg, nodes.Const):
                node_ids.add(str(getitem.arg.value))
    return names, node_ids


def _parse_expression(source: str) -> nodes.Template:
    """One expression as a template tree, parsed the way ``compile_expression`` parses it.

    Parsed on its own, not as ``{{ source }}``: wrapping would let ``a }}{{ b`` pass as one.
    """
    env = environment()
    parser = Parser(env, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("unexpected text after the expression", parser.stream.current.lineno)
    tree = nodes.Template([nodes.Output([expr])], lineno=1)
    tree.set_environment(env)
    return tree


def expression_syntax_error(source: str) -> str | None:
    """The syntax error in a routing expression, or None when it parses."""
    try:
        _parse_expression(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None


def evaluate_condition(expression: str, context: Mapping[str, Any]) -> bool:
    """Whether a routing expression is true for ``context``; raises TemplateError.

    Truth is Jinja's (Python's): an empty string or list is false. An undefined name or attribute
    is an error, not false, so a typo cannot silently send every run down the default route.
    """
    try:
        with work_limited():
            return bool(_compile_expression(expression)(**context))
    except RENDER_ERRORS as exc:
        raise TemplateError(str(exc)) from exc


def template_sources(value: Any) -> list[str]:
    """Every string inside ``value`` that contains template syntax, as parseable templates."""
    if isinstance(value, str):
        return [value] if ("{{" in value or "{%" in value) else []
    if isinstance(value, list):
        return [s for v in value for s in template_sources(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in template_sources(v)]
    return []
