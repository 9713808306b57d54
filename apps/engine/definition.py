"""Reading definitions: parse, check, and report every problem with a pointer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from . import graph
from .canonical import canonical_json, content_hash, not_json_data
from .errors import DefinitionError, InputError, Problem, json_pointer
from .spec import NODE_TYPES, LlmNode, RouterNode, WorkflowSpec

MAX_DEFINITION_BYTES = 256 * 1024
MAX_NODES = 500
MAX_INPUT_BYTES = 256 * 1024


def _node_label(raw: Any, loc: tuple) -> str:
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int) and isinstance(raw, dict):
        nodes = raw.get("nodes")
        if isinstance(nodes, list) and loc[1] < len(nodes) and isinstance(nodes[loc[1]], dict):
            node_id = nodes[loc[1]].get("id")
            if isinstance(node_id, str):
                return f"node '{node_id}': "
        return f"node #{loc[1]}: "
    return ""


def _strip_union_tag(loc: tuple) -> tuple:
    # pydantic puts the discriminator tag ("llm") into the location of a node's errors
    if len(loc) >= 3 and loc[0] == "nodes" and isinstance(loc[1], int) and loc[2] in NODE_TYPES:
        return loc[:2] + loc[3:]
    return loc


def pydantic_problems(raw: Any, errors: list[dict], prefix: tuple = ()) -> list[Problem]:
    """Pydantic errors as Problems; errors inside a node name the node."""
    problems = []
    for error in errors:
        loc = _strip_union_tag(tuple(error["loc"])[len(prefix) :])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(Problem(json_pointer(loc), _node_label(raw, loc) + message))
    return problems


def check_size(spec_json: str) -> list[Problem]:
    size = len(spec_json.encode())
    if size > MAX_DEFINITION_BYTES:
        return [Problem("", f"definition is {size} bytes, over the limit of {MAX_DEFINITION_BYTES}")]
    return []


def _check_json_data(raw: Any) -> None:
    # every JSON value takes at least one byte, so more values than bytes is over the limit too
    found = not_json_data(raw, max_values=MAX_DEFINITION_BYTES)
    if found:
        raise DefinitionError([Problem(json_pointer(found[0]), found[1])])


def _plain_field(value: Any) -> Any:
    # Only the spec's own models are dumped (a retry policy, a router's rules): free-form fields
    # are walked as they are, since dumping them first is what the guard protects against.
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
        return [_plain_field(v) for v in value]
    return value


def check_spec(spec: WorkflowSpec) -> graph.Plan:
    """Graph rules and limits for an already parsed spec; raises DefinitionError.

    A spec parsed elsewhere (the API's request body) gets the same depth and JSON-data guard as
    ``load``: its free-form fields (schemas, tool arguments) are walked before anything dumps them.
    """
    nodes = [{k: _plain_field(v) for k, v in node} for node in spec.nodes]
    _check_json_data({"description": spec.description, "input_schema": spec.input_schema, "nodes": nodes})
    problems = check_size(canonical_json(spec.model_dump(mode="json")))
    if len(spec.nodes) > MAX_NODES:
        problems.append(Problem("/nodes", f"{len(spec.nodes)} nodes, over the limit of {MAX_NODES}"))
    if problems:
        raise DefinitionError(problems)
    plan, problems = graph.check(spec)
    if problems:
        raise DefinitionError(problems)
    assert plan is not None
    return plan


def load(raw: Any) -> graph.Plan:
    """Parse and check a definition given as plain data (from YAML or JSON)."""
    if not isinstance(raw, dict):
        raise DefinitionError([Problem("", "a definition must be an object")])
    _check_json_data(raw)
    problems = check_size(canonical_json(raw))
    if problems:
        raise DefinitionError(problems)
    try:
        spec = WorkflowSpec.model_validate(raw)
    except ValidationError as exc:
        raise DefinitionError(pydantic_problems(raw, exc.errors())) from None
    return check_spec(spec)


def spec_models(spec: WorkflowSpec) -> Iterator[tuple[str, str]]:
    """Every model the definition names, with its pointer: each llm node's ``model`` and
    ``fallbacks``, each llm router's ``llm.model`` and ``llm.fallbacks``."""
    for index, node in enumerate(spec.nodes):
        where = f"/nodes/{index}"
        calls = node if isinstance(node, LlmNode) else node.llm if isinstance(node, RouterNode) and node.llm else None
        if calls is None:
            continue
        where = where if isinstance(node, LlmNode) else where + "/llm"
        yield f"{where}/model", calls.model
        yield from ((f"{where}/fallbacks/{i}", model) for i, model in enumerate(calls.fallbacks))


def model_problems(spec: WorkflowSpec, served: Callable[[str], bool]) -> list[Problem]:
    """A problem for each model no provider serves, as ``served`` (the site's providers) says.

    The engine does not know the providers; the caller passes what does (apps.providers.registry).
    """
    problems = []
    for pointer, model in spec_models(spec):
        if not served(model):
            node = spec.nodes[int(pointer.split("/")[2])].id
            problems.append(Problem(pointer, f"node '{node}': no configured provider serves model '{model}'"))
    return problems


def dump(spec: WorkflowSpec) -> dict[str, Any]:
    """The definition as plain JSON data; ``load(dump(spec)).spec == spec``."""
    return spec.model_dump(mode="json")


def spec_hash(spec: WorkflowSpec) -> str:
    return content_hash(dump(spec))


def validate_input(schema: dict[str, Any], value: Any) -> None:
    """Check a run input against the workflow's input schema; raises InputError."""
    found = not_json_data(value, max_values=MAX_INPUT_BYTES)
    if found:
        raise InputError([Problem(json_pointer(found[0]), found[1])])
    size = len(canonical_json(value).encode())
    if size > MAX_INPUT_BYTES:
        raise InputError([Problem("", f"input is {size} bytes, over the limit of {MAX_INPUT_BYTES}")])
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        raise InputError([Problem(json_pointer(tuple(e.absolute_path)), e.message) for e in errors])
