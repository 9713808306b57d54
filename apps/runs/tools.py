"""Built-in tools that touch the database. Registered in the engine's tool registry at start-up."""

from __future__ import annotations

from typing import Any

from apps.engine.canonical import canonical_json
from apps.engine.tools import ToolArgumentError, ToolContext, tool

from .models import OutboxMessage

MAX_PAYLOAD_BYTES = 256 * 1024


@tool("outbox")
def outbox(*, topic: Any, payload: Any, context: ToolContext) -> dict[str, Any]:
    """Hand a message to the outside world, exactly once per (run, node).

    The node's idempotency key is the row's unique key: a retried or recovered node finds the
    message it already wrote and returns the same answer instead of writing a second one.
    """
    if not isinstance(topic, str) or not 0 < len(topic) <= 200:
        raise ToolArgumentError("outbox needs 'topic' to be a string of 1 to 200 characters")
    if len(canonical_json(payload).encode()) > MAX_PAYLOAD_BYTES:
        raise ToolArgumentError(f"outbox payload is over {MAX_PAYLOAD_BYTES} bytes")
    message, _ = OutboxMessage.objects.get_or_create(
        idempotency_key=context.idempotency_key,
        defaults={"run_id": context.run_id, "node_id": context.node_id, "topic": topic, "payload": payload},
    )
    return {"message_id": message.pk, "topic": message.topic}
