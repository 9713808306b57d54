"""Canonical JSON and content hashes: the same value always hashes the same."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

MAX_DEPTH = 100


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any) -> str:
    """SHA-256 over the canonical JSON of ``value``, as hex."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


# PostgreSQL stores no NUL in text or jsonb (it raises): no value holding one may reach a column.
NUL_MESSAGE = "text cannot hold a NUL character (\\u0000)"


def not_json_data(value: Any, *, max_values: int) -> tuple[tuple, str] | None:
    """Where ``value`` stops being plain JSON data and why, as ``(path, reason)``; None when it is.

    YAML gives dates, sets, bytes and NaN, and its aliases can expand a small text into a huge
    value; none of that may reach ``canonical_json``, a hash or a JSONField (PostgreSQL rejects
    NaN). The walk is iterative and stops after ``max_values`` values, so it is cheap on any input.
    """
    # paths are kept as (parent, key) pairs, so each step costs the same however deep it is
    stack: list[tuple[Any, int, Any]] = [(None, 0, value)]
    seen = 0
    while stack:
        path, depth, item = stack.pop()
        seen += 1
        if seen > max_values:
            return (), f"more than {max_values} values, over the size limit"
        if depth > MAX_DEPTH:
            return _unwind(path), f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, str):
            if "\x00" in item:
                return _unwind(path), NUL_MESSAGE
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return _unwind(path), f"key {key!r} is not a string"
                if "\x00" in key:
                    return _unwind((path, key)), NUL_MESSAGE
                stack.append(((path, key), depth + 1, sub))
        elif isinstance(item, list | tuple):
            stack.extend(((path, i), depth + 1, sub) for i, sub in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return _unwind(path), f"{item} is not a JSON number"
        elif item is not None and not isinstance(item, str | int | float):
            return _unwind(path), f"a {type(item).__name__} is not JSON data"
    return None


def nul_path(value: Any) -> tuple | None:
    """Where a NUL character sits in a JSON value, in a string or a key; None when there is none.

    PostgreSQL stores no NUL in text or jsonb (it raises), so no value holding one may reach a
    column on any backend. Iterative, like ``not_json_data``, so any depth is cheap.
    """
    stack: list[tuple[tuple, Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
            continue
        items = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list | tuple) else ()
        for key, sub in reversed(list(items)):
            if isinstance(key, str) and "\x00" in key:
                return (*path, key)
            stack.append(((*path, key), sub))
    return None


def _unwind(path: Any) -> tuple:
    parts = []
    while path is not None:
        path, key = path
        parts.append(key)
    return tuple(reversed(parts))
