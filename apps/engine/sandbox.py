"""Jinja2's sandbox, bounded in work as well as in reach.

Jinja's sandbox guards attributes, not resources: ``{{ 9 ** (9 ** 9) }}`` holds a worker's CPU,
``{{ 'a' * 10**10 }}`` or ``{{ 'a'.ljust(10**9) }}`` its memory, and two nested loops over
``range(10**4)`` spin for seconds, all before any check on the rendered result could run. Here
every operation that can build something bigger than its operands is checked *before* it runs
(its result's size predicted from its operands), and everything a render does is charged to one
budget per render (``work_limited``):

- ``MAX_VALUE_SIZE`` characters or items for any one value built (``*``, ``+``, ``~``, ``%``,
  ``format``, padding, ``join``, ``replace``, ``indent``, ``center``, ``lipsum``...) and for any
  value written out or turned into text (a list holding one long string many times is measured,
  not printed, before it is refused);
- ``MAX_INT_BITS`` bits for an integer built by ``*`` or ``**``;
- ``MAX_LOOP_ITERATIONS`` loop iterations in all (nested loops, macros and recursive loops included);
- ``MAX_WORK`` units of work in all: each character or item an operation builds, measures or
  slices is a unit, and each call ``CALL_UNITS``. It bounds what a loop (or a macro calling
  itself twice) can do with values that are each small.

Each refusal is a ``SecurityError`` that names the limit. The budget lives in a ``ContextVar``:
each thread (and each render) has its own, so the one shared environment stays thread-safe.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Markup, Namespace
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import generate_lorem_ipsum

MAX_VALUE_SIZE = 200_000
MAX_INT_BITS = 4096
MAX_LOOP_ITERATIONS = 200_000
MAX_WORK = 5_000_000
MAX_LIPSUM_WORDS = 10_000
CALL_UNITS = 50  # what a call costs in MAX_WORK: a macro call takes about 5 µs, so a render makes at most 100,000
LOOP_FILTER = "dagwright_counted_loop"  # the filter every for loop's iterable passes through (see _Generator)
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")
_FORMAT_NUMBERS = re.compile(r"\d+")


class _Work:
    """What one render has spent so far."""

    __slots__ = ("loops", "units")

    def __init__(self) -> None:
        self.loops = 0
        self.units = 0


_work: ContextVar[_Work | None] = ContextVar("dagwright_template_work", default=None)


@contextmanager
def work_limited() -> Iterator[None]:
    """Run a render (or an expression) on a fresh budget. Every entry point of ``templating`` does."""
    token = _work.set(_Work())
    try:
        yield
    finally:
        _work.reset(token)


def charge(units: int) -> None:
    work = _work.get()
    if work is None:
        return
    work.units += units
    if work.units > MAX_WORK:
        raise SecurityError(f"the template did more than {MAX_WORK:,} units of work (MAX_WORK: characters and items built, and calls)")


def _loop_step() -> None:
    work = _work.get()
    if work is None:
        return
    work.loops += 1
    if work.loops > MAX_LOOP_ITERATIONS:
        raise SecurityError(f"the template's loops ran more than {MAX_LOOP_ITERATIONS:,} iterations (MAX_LOOP_ITERATIONS)")


def counted_loop(iterable: Iterable[Any]) -> Iterator[Any]:
    """An iterable whose every step is counted against the render's loop limit."""
    for item in iterable:
        _loop_step()
        yield item


def built(size: int, what: str) -> None:
    """Refuse a value of ``size`` characters or items before it is built, else charge it."""
    if size > MAX_VALUE_SIZE:
        raise SecurityError(f"{what} would be {size:,} characters or items, over {MAX_VALUE_SIZE:,} (MAX_VALUE_SIZE)")
    charge(size)


def measure(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """About how many characters ``value`` takes as text; stops (raises) as soon as it passes
    ``limit``, so measuring a list that holds one long string a million times costs little."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Namespace):
            stack.append(dict(item._Namespace__attrs))  # type: ignore[attr-defined]  # its repr shows them
        else:
            total += 40
        if total > limit:
            raise SecurityError(f"the value would be over {limit:,} characters as text (MAX_VALUE_SIZE)")
    charge(total)
    return total


def text(value: Any) -> str:
    """``str(value)``, measured first."""
    if not isinstance(value, str):
        measure(value)
    return str(value)


# --- operators --------------------------------------------------------------------------------


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``left operator right`` when its result would pass a limit."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and right > 0 and abs(left).bit_length() * right > MAX_INT_BITS:
        raise SecurityError(f"** result would be over {MAX_INT_BITS} bits (MAX_INT_BITS)")
    if operator == "*":
        if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"* result would be over {MAX_INT_BITS} bits (MAX_INT_BITS)")
        sequence, times = (left, right) if isinstance(right, int) else (right, left)
        if _sized(sequence) is not None and isinstance(times, int):
            built(len(sequence) * max(times, 0), "the repetition")
    if operator == "+" and _sized(left) is not None and _sized(right) is not None:
        built(len(left) + len(right), "the sum")
    if operator == "%" and isinstance(left, str):
        check_printf(left, right)


def check_printf(template: str, values: Any) -> None:
    """Refuse ``template % values`` when a width, a precision or the result would be too big."""
    specs = _PRINTF_SPEC.findall(template)
    for width, precision, _ in specs:
        for number in (width, precision):
            if number == "*":
                raise SecurityError("a '*' width or precision is not allowed in % formatting")
            if number and int(number) > MAX_VALUE_SIZE:
                raise SecurityError(f"a % format width of {int(number):,} is over {MAX_VALUE_SIZE:,} (MAX_VALUE_SIZE)")
    args = list(values.values()) if isinstance(values, dict) else list(values) if isinstance(values, tuple) else [values]
    widest = max((measure(arg) for arg in args), default=0)
    largest_spec = max((int(n or 0) for w, p, _ in specs for n in (w, p)), default=0)
    built(len(template) + len(specs) * (widest + largest_spec), "the % formatting")


def concat(values: Iterable[Any]) -> str:
    """``a ~ b ~ c``: measured before it is joined."""
    parts = [text(value) for value in values]
    built(sum(map(len, parts)), "the ~ concatenation")
    return "".join(parts)


# --- calls ------------------------------------------------------------------------------------


def _width(args: tuple, kwargs: dict, index: int, name: str) -> int:
    value = args[index] if len(args) > index else kwargs.get(name, 0)
    return value if isinstance(value, int) else 0


def _str_method_size(obj: str, method: str, args: tuple, kwargs: dict) -> int | None:
    """The size the result of ``obj.method(*args)`` can reach, for the methods that grow a string."""
    if method in ("ljust", "rjust", "center", "zfill"):
        return max(len(obj), _width(args, kwargs, 0, "width"))
    if method == "expandtabs":
        return len(obj) * max(1, _width(args, kwargs, 0, "tabsize") or 8)
    if method == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = obj.count(args[0]) if args[0] else len(obj) + 1
        return len(obj) + hits * max(0, len(args[1]) - len(args[0]))
    if method == "join" and args and isinstance(args[0], list | tuple):
        return sum(measure(item) for item in args[0]) + len(obj) * len(args[0])
    if method == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        return len(obj) * max(1, longest)
    return None


def check_call(obj: Any, args: tuple, kwargs: dict) -> tuple:
    """Refuse a method call whose result would pass a limit, before it runs; returns the
    arguments to call it with (an iterable given to ``str.join`` is made a list, to be measured)."""
    owner, method = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if isinstance(owner, str) and method == "join" and args and not isinstance(args[0], list | tuple):
        args = (list(counted_loop(args[0])), *args[1:])
    if isinstance(owner, str):
        size = _str_method_size(owner, method, args, kwargs)
        if size is not None:
            built(size, f"str.{method}()")
    elif isinstance(owner, int) and method == "to_bytes":
        built(_width(args, kwargs, 0, "length"), "int.to_bytes()")
    return args


def charged(result: Any, *, call: bool = False) -> Any:
    """``result``, its size (and the call that made it) charged to the render's budget."""
    charge((CALL_UNITS if call else 0) + (_sized(result) or 0))
    return result


class BoundedFormatter(SandboxedFormatter):
    """``str.format`` with each field's width and precision and its text bounded."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in _FORMAT_NUMBERS.findall(format_spec):
            if int(number) > MAX_VALUE_SIZE:
                raise SecurityError(f"a format width or precision of {int(number):,} is over {MAX_VALUE_SIZE:,} (MAX_VALUE_SIZE)")
        if not format_spec:
            return charged(text(value))
        return charged(super().format_field(value, format_spec))

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "s", "a"):
            measure(value)
        return super().convert_field(value, conversion)


class BoundedEscapeFormatter(BoundedFormatter, SandboxedEscapeFormatter):
    pass


def bounded_format(env: ImmutableSandboxedEnvironment, value: Any) -> Callable[..., str] | None:
    """``str.format`` and ``str.format_map`` of ``value`` through ``BoundedFormatter``; None for
    anything else. What ``SandboxedEnvironment.wrap_str_format`` does, with the bounded formatter."""
    if getattr(value, "__name__", None) not in ("format", "format_map") or not isinstance(owner := getattr(value, "__self__", None), str):
        return None
    formatter = BoundedEscapeFormatter(env, escape=owner.escape) if isinstance(owner, Markup) else BoundedFormatter(env)
    is_map = value.__name__ == "format_map"

    def wrapper(*args: Any, **kwargs: Any) -> str:
        if is_map:
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one argument")
            args, kwargs = (), args[0]
        result = type(owner)(formatter.vformat(owner, args, kwargs))
        built(len(result), "str.format()")
        return result

    return wrapper


# --- filters and globals ----------------------------------------------------------------------


def _guard_center(value: Any, width: int = 80, *_: Any, **__: Any) -> None:
    built(max(len(text(value)), width if isinstance(width, int) else 0), "the center filter")


def _guard_indent(value: Any, width: int | str = 4, *_: Any, **__: Any) -> None:
    value = text(value)
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    built(len(value) + (value.count("\n") + 1) * pad, "the indent filter")


def _guard_format(value: Any, *args: Any, **kwargs: Any) -> None:
    check_printf(text(value), kwargs or args)


def _guard_join(value: Any, d: str = "", *_: Any, **__: Any) -> list[Any]:
    items = list(counted_loop(value))  # a generator is measured too: it may repeat one long string
    built(sum(measure(item) for item in items) + len(text(d)) * len(items), "the join filter")
    return items


def _guard_replace(s: Any, old: Any = "", new: Any = "", *_: Any, **__: Any) -> None:
    s, old, new = text(s), text(old), text(new)
    hits = s.count(old) if old else len(s) + 1
    built(len(s) + hits * max(0, len(new) - len(old)), "the replace filter")


def _guard_sum(iterable: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, int | float) and isinstance(iterable, list | tuple):
        built(measure(start) + sum(measure(item) for item in iterable), "the sum filter")


def _guard_count(what: str) -> Callable[..., None]:
    def guard(value: Any, count: Any = 0, *_: Any, **__: Any) -> None:
        if isinstance(count, int) and count > MAX_VALUE_SIZE:
            raise SecurityError(f"the {what} filter's {count:,} is over {MAX_VALUE_SIZE:,} (MAX_VALUE_SIZE)")

    return guard


def _guard_measured(what: str) -> Callable[..., None]:
    def guard(value: Any, *_: Any, **__: Any) -> None:
        built(measure(value), what)

    return guard


FILTER_GUARDS: dict[str, Callable[..., Any]] = {
    "center": _guard_center,
    "indent": _guard_indent,
    "format": _guard_format,
    "join": _guard_join,
    "replace": _guard_replace,
    "sum": _guard_sum,
    "batch": _guard_count("batch"),
    "slice": _guard_count("slice"),
    "wordwrap": _guard_measured("the wordwrap filter"),
    "string": _guard_measured("the string filter"),
    "pprint": _guard_measured("the pprint filter"),
    "tojson": _guard_measured("the tojson filter"),
    "urlize": _guard_measured("the urlize filter"),
}


def guarded_filter(original: Callable[..., Any], guard: Callable[..., Any] | None) -> Callable[..., Any]:
    """``original`` checked by ``guard`` (given the filter's own arguments) and its result charged.
    A guard that returns something other than None replaces the filtered value with it."""
    passed = 1 if getattr(original, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(original)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        if guard is not None and (value := guard(*args[passed:], **kwargs)) is not None:
            args = (*args[:passed], value, *args[passed + 1 :])
        return charged(original(*args, **kwargs), call=True)

    return filter_


def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # Jinja's own names
    """Jinja's ``lipsum``, at most ``MAX_LIPSUM_WORDS`` words."""
    if not all(isinstance(v, int) for v in (n, min, max)) or n * max > MAX_LIPSUM_WORDS:
        raise SecurityError(f"lipsum is limited to {MAX_LIPSUM_WORDS:,} words (n * max, MAX_LIPSUM_WORDS)")
    return charged(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


# --- the environment --------------------------------------------------------------------------


class _Generator(CodeGenerator):
    """Compiles ``~`` through ``environment.concat_bounded`` and ``value[a:b]`` through
    ``environment.getitem`` (Jinja writes slices as plain Python subscripts)."""

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for part in (node.arg.start, node.arg.stop, node.arg.step):
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
            self.write(", ")
        self.write("))")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_bounded((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def count_loops(tree: nodes.Template) -> nodes.Template:
    """``tree`` with every for loop's iterable (and a recursive loop's ``loop(...)``) passed
    through the counting filter. Done on the tree before code generation, which looks up the
    filters a template uses before it writes any code."""
    for loop in tree.find_all(nodes.For):
        loop.iter = _counted(loop.iter)
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == "loop" and call.args:
            call.args = [_counted(call.args[0]), *call.args[1:]]
    return tree


def _counted(iterable: nodes.Expr) -> nodes.Expr:
    if isinstance(iterable, nodes.Filter) and iterable.name == LOOP_FILTER:
        return iterable
    return nodes.Filter(iterable, LOOP_FILTER, [], [], None, None, lineno=iterable.lineno)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every growth checked before it happens (see the module's doc)."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=text, **options)
        self.filters = {name: guarded_filter(f, FILTER_GUARDS.get(name)) for name, f in self.filters.items()}
        self.filters[LOOP_FILTER] = counted_loop
        self.globals["lipsum"] = lipsum

    def add_filter(self, name: str, function: Callable[..., Any]) -> None:
        self.filters[name] = guarded_filter(function, FILTER_GUARDS.get(name))

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False) -> str:
        return super()._generate(count_loops(source), name, filename, defer_init)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # Jinja's signature
        args = check_call(__obj, args, kwargs)
        return charged(super().call(__context, __obj, *args, **kwargs), call=True)

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            charged(value)
        return value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        return bounded_format(self, value)

    def concat_bounded(self, values: Iterable[Any]) -> str:
        return concat(values)
