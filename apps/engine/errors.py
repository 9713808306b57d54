"""Errors the engine reports about definitions, inputs and templates."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document, located by an RFC 6901 JSON pointer."""

    pointer: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "detail": self.message}


class DefinitionError(ValueError):
    """A workflow definition was rejected; ``problems`` says where and why."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.pointer or '/'}: {p.message}" for p in problems))


class InputError(ValueError):
    """A run input does not satisfy the workflow's input schema."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.pointer or '/'}: {p.message}" for p in problems))


class TemplateError(ValueError):
    """A template failed to render (undefined name, sandbox violation, bad syntax)."""


def json_pointer(path: tuple | list) -> str:
    """Turn a location path such as ``("nodes", 2, "id")`` into ``/nodes/2/id``."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "".join("/" + p for p in parts)
