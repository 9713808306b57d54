"""Celery messages carry node-run ids only (DESIGN.md), checked on the message the broker holds.

The run's first node is sent to a queue no worker consumes, and the message is read raw off the
broker's own storage: the message files of the filesystem transport (the embedded default), or
the queue's list in Redis. Its body is decoded as a worker would decode it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
from kombu.serialization import loads

from apps.runs.models import NodeRun, NodeStatus
from apps.runs.services import run_start
from orchestrator_site.celery import app
from tests.factories import definition, llm_node, save_workflow

pytestmark = pytest.mark.django_db

INPUT_SECRET = "sk-live-INPUT-4f9a2c7e1b"
PROMPT_SECRET = "sk-live-PROMPT-8d3e6a0f5c"
DESCRIPTION_SECRET = "sk-live-DESCRIPTION-2b7c9e4a1d"


def raw_messages(queue: str) -> list[bytes]:
    """Every message waiting in ``queue``, as the bytes the broker stores."""
    url = app.conf.broker_url
    if urlparse(url).scheme in {"redis", "rediss"}:
        return redis.Redis.from_url(url).lrange(queue, 0, -1)  # kombu keeps a priority-0 queue as a list under its name
    folder = Path(app.conf.broker_transport_options["data_folder_in"])
    return [path.read_bytes() for path in sorted(folder.glob(f"*.{queue}.msg")) if not path.name.startswith(".")]


def decoded_body(raw: bytes) -> tuple[dict, bytes]:
    envelope = json.loads(raw)
    body = envelope["body"]
    if envelope["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return envelope, body if isinstance(body, bytes) else body.encode()


def test_a_queued_node_is_sent_as_its_node_run_id_and_nothing_else(unconsumed_queue, django_capture_on_commit_callbacks):
    spec = definition("secretive", [llm_node("answer", f"Answer {{{{ input.topic }}}} ({PROMPT_SECRET}).")], description=f"holds {DESCRIPTION_SECRET}")
    version = save_workflow(spec)
    with django_capture_on_commit_callbacks(execute=True):
        run = run_start(workflow=version.workflow, input={"topic": f"the key is {INPUT_SECRET}"})
    node_run = NodeRun.objects.get(run=run, node_id="answer", status=NodeStatus.QUEUED)

    (raw,) = raw_messages(unconsumed_queue)
    envelope, body = decoded_body(raw)
    args, kwargs, embed = loads(body, envelope["content-type"], envelope["content-encoding"])

    assert envelope["headers"]["task"] == "runs.execute_node"
    assert (args, kwargs) == ([node_run.pk], {})
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    assert (envelope["headers"]["argsrepr"], envelope["headers"]["kwargsrepr"]) == (repr((node_run.pk,)), "{}")
    for secret in (INPUT_SECRET, PROMPT_SECRET, DESCRIPTION_SECRET):
        assert secret.encode() not in raw
        assert secret.encode() not in body
