"""A chat-completions server on loopback for tests: a real HTTP server in a thread, speaking the
OpenAI protocol closely enough for the official SDK, with scripted replies.

Each request is recorded (path, headers, JSON body). Replies are taken from ``replies`` in order;
when none is queued the server answers with a normal completion. A server given ``api_key``
answers 401, as OpenAI does, to a request whose bearer token is not that key.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_TEXT = "Harbours shelter ships from the open sea."


def completion(content: str | None = DEFAULT_TEXT, *, model: str = "served-model-2026-01-01", usage: dict[str, int] | None = None, finish: str = "stop") -> str:
    """A chat-completion body; ``usage=None`` leaves the usage out, as some servers do."""
    body: dict[str, Any] = {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body)


def error_body(message: str, *, code: str | None = None, kind: str = "invalid_request_error") -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = field(default_factory=lambda: completion(usage={"prompt_tokens": 21, "completion_tokens": 8, "total_tokens": 29}))
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering, to outlast a client's timeout


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chat = self.server.chat
        chat.requests.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"{}")))
        reply = chat.next_reply(self.path, self.headers.get("Authorization", ""))
        time.sleep(reply.delay)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting: that was the point
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        data = reply.body.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    chat: ChatServer


class ChatServer:
    """Start with ``with ChatServer(...) as server:``; point a client at ``server.base_url``."""

    def __init__(self, api_key: str = ""):
        self.api_key = api_key
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self._http = _Server(("127.0.0.1", 0), Handler)
        self._http.chat = self
        # a short poll keeps shutdown() from waiting half a second per test
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, name="loopback-chat", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def reply(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def next_reply(self, path: str, authorization: str) -> Reply:
        if path != "/v1/chat/completions":
            return Reply(404, error_body(f"no route {path}"))
        if self.api_key and authorization != f"Bearer {self.api_key}":
            return Reply(401, error_body("Incorrect API key provided.", code="invalid_api_key"))
        return self.replies.popleft() if self.replies else Reply()

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)
