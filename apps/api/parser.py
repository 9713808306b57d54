"""Reading request bodies: strict JSON, as RFC 8259 has it, and not nested past a limit."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from django.http import HttpRequest
from ninja.parser import Parser

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


class StrictJSONParser(Parser):
    def parse_body(self, request: HttpRequest) -> Any:
        try:
            data = json.loads(request.body, parse_constant=_not_a_json_number)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if nested_deeper_than(data, MAX_BODY_DEPTH):
            raise ValueError(f"nested deeper than {MAX_BODY_DEPTH} levels")
        return data
