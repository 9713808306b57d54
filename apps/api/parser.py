"""Reading request bodies: strict JSON, as RFC 8259 has it, or YAML (``application/yaml``,
``text/yaml``: workflow definitions as authors write them), and not nested past a limit."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import yaml
from django.http import HttpRequest
from ninja.parser import Parser

from apps.engine.canonical import nul_path
from apps.engine.errors import json_pointer

# The engine's own limit for definitions and inputs (apps.engine.canonical.MAX_DEPTH): a definition
# is the whole body, so the API accepts exactly the definitions the engine can load again later.
# Past it pydantic can also fail to serialise a value (from about 255 levels), which would be a 500.
MAX_BODY_DEPTH = 100


def _not_a_json_number(name: str) -> NoReturn:
    # Python's json reads NaN and Infinity; JSON has neither, and PostgreSQL's jsonb refuses them.
    raise ValueError(f"{name} is not a JSON number")


def nested_deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return False


YAML_TYPES = frozenset({"application/yaml", "text/yaml", "application/x-yaml"})


class YAMLBodyError(ValueError):
    """A YAML body that does not parse; ``line`` and ``column`` (1-based) say where, when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.message, self.line, self.column = message, line, column
        super().__init__(f"line {line}, column {column}: {message}" if line else message)


def is_yaml(request: HttpRequest) -> bool:
    return request.content_type in YAML_TYPES


def parse_yaml(body: bytes) -> Any:
    try:
        return yaml.safe_load(body.decode())
    except UnicodeDecodeError:
        raise YAMLBodyError("the body is not UTF-8 text") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part) or "not valid YAML"
        raise YAMLBodyError(message, mark.line + 1 if mark else None, mark.column + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise YAMLBodyError(str(exc)) from None
    except RecursionError:
        raise YAMLBodyError("nested too deeply") from None


class BodyRefused(ValueError):
    """A body that parses but holds what no field of any operation may store: a 422 at ``pointer``."""

    def __init__(self, pointer: str, message: str):
        self.pointer, self.message = pointer, message
        super().__init__(f"{pointer or '/'}: {message}")


def refuse_nul(data: Any) -> None:
    # PostgreSQL stores no NUL in text or jsonb: refused here, for every body of every operation
    # (definitions, run inputs, decisions), rather than as a 500 from the database later.
    found = nul_path(data)
    if found is not None:
        raise BodyRefused(json_pointer(found), "text cannot hold a NUL character (\\u0000)")


class StrictJSONParser(Parser):
    def parse_body(self, request: HttpRequest) -> Any:
        try:
            data = parse_yaml(request.body) if is_yaml(request) else json.loads(request.body, parse_constant=_not_a_json_number)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if nested_deeper_than(data, MAX_BODY_DEPTH):
            raise ValueError(f"nested deeper than {MAX_BODY_DEPTH} levels")
        refuse_nul(data)
        return data
