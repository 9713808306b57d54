"""The workflow definition: what authors write (YAML or JSON) and what the API accepts.

Structure is checked here by pydantic; graph-wide rules (cycles, dependencies, template
references) by ``graph.check``. ``definition.load`` runs both and reports every problem at once.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from . import templating
from .tools import TOOLS

NodeId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")]
# When a node runs, given how its dependencies ended; ``scheduler`` defines each rule exactly.
TriggerRule = Literal["all_success", "one_success", "none_failed_min_one_success", "all_done"]


def _check_json_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
    return value


def _check_template(value: str) -> str:
    error = templating.syntax_error(value)
    if error:
        raise ValueError(f"template syntax error, {error}")
    return value


def _check_expression(value: str) -> str:
    error = templating.expression_syntax_error(value)
    if error:
        raise ValueError(f"expression syntax error, {error}")
    return value


class RetryPolicy(BaseModel):
    """How often a node is tried and how long it waits in between (exponential, full jitter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(3, ge=1, le=50)
    backoff_seconds: float = Field(1.0, ge=0, le=3600)
    backoff_cap_seconds: float = Field(60.0, ge=0, le=86_400)


class NodeCache(BaseModel):
    """Reuse a model output already paid for: a valid answer stored for this node of the same
    workflow version, for the same rendered request (input hash), within ``ttl_seconds``.
    Opt-in per llm or router node; a reused answer costs the new run nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl_seconds: int = Field(ge=1, le=30 * 86_400)


# The largest amount of money, and of tokens, that every database stores and reads back exactly.
# Money has 8 decimal places (``Run.cost`` and the other money columns); SQLite keeps a decimal as
# a REAL, exact to 15 significant digits, so 7 digits are left before the point: a larger limit
# would read back as another number, or not at all (Django's converter raises, and every page
# listing the run with it). Tokens are 64-bit integers (``BigIntegerField``) everywhere.
MAX_COST = Decimal("9999999.99999999")
MAX_TOKENS = 2**63 - 1
MONEY_PATTERN = r"^[0-9]{1,7}(\.[0-9]{1,8})?$"


def _money_text(value: Any) -> Any:
    # The schema's pattern, enforced: "1e3" or " 5" would otherwise be read as a decimal too.
    if isinstance(value, str) and not re.fullmatch(MONEY_PATTERN, value):
        raise ValueError("write an amount as digits, such as 12.50: at most 7 before the point and 8 after")
    # A JSON number is binary, exact to no decimal place: it is taken to the nearest 1e-8 (write
    # a string for an exact amount), so every number the schema allows is accepted.
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(repr(value)).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_EVEN)
    return value


# The schema pydantic would state for a decimal allows any string and no bounds: this one says what
# the server takes, so a client (or a fuzzer) valid by the schema is never refused.
MoneyAmount = Annotated[
    Decimal,
    BeforeValidator(_money_text),
    Field(ge=0, le=MAX_COST, max_digits=15, decimal_places=8),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": float(MAX_COST)}, {"type": "string", "pattern": MONEY_PATTERN}]}),
    # Dumped as the pattern reads it: str(Decimal) would write 0.00000001 as "1E-8", and a
    # definition or a run's options must read back what they dumped.
    PlainSerializer(lambda value: f"{value:f}", return_type=str, when_used="json"),
]


class Budget(BaseModel):
    """A run's spending limits; either may be left out (no limit). Every model call's worst case
    (its prompt's tokens plus ``max_tokens`` out, at its model's price) is reserved against what
    remains before the call is made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_cost: MoneyAmount | None = Field(None, description="In US dollars: a string with at most 8 decimal places, or a number (rounded to 8 places).")


ModelName = Annotated[str, Field(min_length=1, max_length=200)]


def _distinct_fallbacks(value: list[str]) -> list[str]:
    repeated = sorted({m for m in value if value.count(m) > 1})
    if repeated:
        raise ValueError(f"fallback model '{repeated[0]}' is listed twice")
    return value


class NodeBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: NodeId
    depends_on: list[NodeId] = Field(default_factory=list)
    description: str = Field("", max_length=2000)
    retry: RetryPolicy | None = None  # None: the workflow's default policy
    trigger_rule: TriggerRule = "all_success"


class LlmNode(NodeBase):
    """A model call. ``prompt`` and ``system`` are sandboxed Jinja2 templates."""

    type: Literal["llm"]
    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1, max_length=100_000)
    system: str = Field("", max_length=100_000)
    output_schema: dict[str, Any] | None = None
    max_tokens: int = Field(512, ge=1, le=200_000)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    cache: NodeCache | None = None  # None: every attempt calls the model
    # Tried in order after ``model``: on a permanent failure, exhausted retries, an open circuit
    # or budget pressure (then only a model whose worst case fits).
    fallbacks: list[ModelName] = Field(default_factory=list, max_length=10)

    _schema = field_validator("output_schema")(_check_json_schema)
    _templates = field_validator("prompt", "system")(_check_template)
    _fallbacks = field_validator("fallbacks")(_distinct_fallbacks)


class ToolNode(NodeBase):
    """A call to a registered Python tool; string arguments are sandboxed templates."""

    type: Literal["tool"]
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tool")
    @classmethod
    def _known_tool(cls, value: str) -> str:
        if value not in TOOLS:
            raise ValueError(f"unknown tool '{value}' (known: {', '.join(sorted(TOOLS))})")
        return value

    @field_validator("args")
    @classmethod
    def _arg_templates(cls, value: dict[str, Any]) -> dict[str, Any]:
        for source in templating.template_sources(value):
            _check_template(source)
        return value


class RouteRule(BaseModel):
    """Take ``route`` when ``when``, a sandboxed Jinja2 expression over ``input`` and ``nodes``, is true."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str = Field(min_length=1, max_length=10_000)
    route: NodeId

    _when = field_validator("when")(_check_expression)


class LlmRouting(BaseModel):
    """Let a model pick the route. Its answer follows ``routing.route_schema``: a route, a
    confidence in [0, 1] and a reason; below ``min_confidence`` the run takes ``low_confidence_route``
    (typically a review gate) instead of the model's pick."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1, max_length=100_000)
    system: str = Field("", max_length=100_000)
    min_confidence: float = Field(ge=0.0, le=1.0)
    low_confidence_route: NodeId
    max_tokens: int = Field(256, ge=1, le=200_000)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    fallbacks: list[ModelName] = Field(default_factory=list, max_length=10)  # as on an llm node

    _templates = field_validator("prompt", "system")(_check_template)
    _fallbacks = field_validator("fallbacks")(_distinct_fallbacks)


class RouterNode(NodeBase):
    """Sends the run down one of ``routes`` (direct successors of the router); the others are skipped.

    Either ``rules`` (the first whose ``when`` is true wins, else ``default``) or ``llm``.
    """

    type: Literal["router"]
    routes: list[NodeId] = Field(min_length=1, max_length=100)
    rules: list[RouteRule] | None = Field(None, max_length=100)
    default: NodeId | None = None
    llm: LlmRouting | None = None
    cache: NodeCache | None = None  # llm routers only: rules cost nothing to evaluate again

    @field_validator("routes")
    @classmethod
    def _distinct_routes(cls, value: list[str]) -> list[str]:
        repeated = sorted({r for r in value if value.count(r) > 1})
        if repeated:
            raise ValueError(f"route '{repeated[0]}' is listed twice")
        return value

    @model_validator(mode="after")
    def _one_way_to_route(self) -> RouterNode:
        if (self.rules is None) == (self.llm is None):
            raise ValueError("a router needs either rules (with a default route) or llm, not both")
        if self.rules is not None and self.default is None:
            raise ValueError("a router with rules needs a default route")
        if self.llm is not None and self.default is not None:
            raise ValueError("default goes with rules; an llm router falls back to llm.low_confidence_route")
        return self


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _check_duration(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]{0,5}[smhd]", value):
        raise ValueError(f"'{value}' is not a duration: write a number and a unit, such as 90s, 30m, 4h or 2d")
    return value


Duration = Annotated[str, AfterValidator(_check_duration), Field(description="a duration such as 90s, 30m, 4h or 2d")]


def duration_seconds(value: str) -> int:
    """``"30m"`` -> 1800."""
    return int(value[:-1]) * _SECONDS[value[-1]]


GroupName = Annotated[str, Field(min_length=1, max_length=150)]
UserName = Annotated[str, Field(min_length=1, max_length=150)]


class Escalation(BaseModel):
    """What happens to a review still undecided at its due time.

    ``reassign`` hands it to ``group`` (with a new due time, ``due_in`` again); ``reject`` rejects
    it; ``approve`` approves it as produced, and only where ``allow_auto_approve`` says the
    definition's author meant it (an unattended approval must never be an accident).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["reassign", "reject", "approve"]
    group: GroupName | None = None
    allow_auto_approve: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> Escalation:
        if self.action == "reassign" and not self.group:
            raise ValueError("escalation by reassign needs a group")
        if self.action != "reassign" and self.group:
            raise ValueError("only a reassign escalation names a group")
        if self.action == "approve" and not self.allow_auto_approve:
            raise ValueError("escalation by approve needs allow_auto_approve: true (an approval nobody gave)")
        return self


class ReviewNode(NodeBase):
    """A human review gate: the branch pauses until reviewers approve, edit or reject ``subject``'s
    output (default: the gate's only dependency).

    The gate's output is the decision, ``{"decision", "output", "route", "comment", "decided_by"}``;
    ``output`` is exactly what was approved (the edit, if any), and nodes downstream of the gate
    that read ``nodes.<subject>`` see that approved value too. On reject the gate fails, or, with
    ``on_reject``, takes that route (a direct successor) and skips its other successors.
    """

    type: Literal["review"]
    subject: NodeId | None = None
    instructions: str = Field("", max_length=20_000)
    assignees: list[UserName] = Field(default_factory=list, max_length=100)
    groups: list[GroupName] = Field(default_factory=lambda: ["reviewers"], max_length=100)
    approvals_required: int = Field(1, ge=1, le=10)
    due_in: Duration | None = None
    escalation: Escalation | None = None
    on_reject: NodeId | None = None

    @model_validator(mode="after")
    def _reviewable(self) -> ReviewNode:
        if not self.assignees and not self.groups:
            raise ValueError("a review needs assignees or groups (someone must be able to decide)")
        if self.escalation is not None and self.due_in is None:
            raise ValueError("an escalation needs a due_in (when it escalates)")
        if self.subject is None and len(self.depends_on) != 1:
            raise ValueError("a review with several dependencies needs a subject (the node whose output is reviewed)")
        if self.subject is not None and self.subject not in self.depends_on:
            raise ValueError(f"subject '{self.subject}' must be one of the review's depends_on")
        return self

    @property
    def subject_id(self) -> str:
        return self.subject or self.depends_on[0]


NODE_TYPES: dict[str, type[NodeBase]] = {"llm": LlmNode, "tool": ToolNode, "router": RouterNode, "review": ReviewNode}
AnyNode = LlmNode | ToolNode | RouterNode | ReviewNode


def _known_type(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get("type")
        if "type" not in value:
            raise PydanticCustomError("missing_node_type", "a node needs a type (known: {known})", {"known": ", ".join(NODE_TYPES)})
        if not isinstance(kind, str) or kind not in NODE_TYPES:  # a list or dict is not hashable
            raise PydanticCustomError(
                "unknown_node_type",
                "unknown node type '{kind}' (known: {known})",
                {"kind": kind, "known": ", ".join(NODE_TYPES)},
            )
    return value


Node = Annotated[
    Annotated[AnyNode, Field(discriminator="type")],
    BeforeValidator(_known_type),
]


class WorkflowSpec(BaseModel):
    """A workflow: a named DAG of nodes with a JSON Schema for its input."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    name: Name
    description: str = Field("", max_length=5000)
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    budget: Budget | None = None  # a run may override it (its options' "budget")
    # At least one (graph.check says so with its own words); stated in the schema for clients.
    nodes: list[Node] = Field(json_schema_extra={"minItems": 1})

    _schema = field_validator("input_schema")(_check_json_schema)

    def node(self, node_id: str) -> AnyNode:
        return next(n for n in self.nodes if n.id == node_id)

    def retry_policy(self, node_id: str) -> RetryPolicy:
        """The node's own retry policy, or the workflow's default."""
        return self.node(node_id).retry or self.retry
