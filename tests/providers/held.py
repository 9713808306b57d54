"""A model whose answers the test releases: a chat-completions server on loopback that holds each
call until told to answer, so that a node is *known* to be running for as long as a test needs
it (a page must see it running, a worker must be killed in the middle of a call, a message must
be delivered again while its node runs). Waiting for a moment to come round by itself is what
made those tests fail under load.

Workers reach it through the product's own OpenAI-compatible provider (``DAGWRIGHT_PROVIDERS``,
``providers()`` below); nothing in the product is patched. The first call for each prompt is held
until ``Call.release()``; a call for a prompt already seen (the next attempt of a node whose worker
died) is answered at once. ``Call.process(among=...)`` names the process that made a call, from
its connection (Linux ``/proc``), which is how a test knows which worker holds the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.providers import loopback
from tests.providers.loopback import Reply, completion

MODELS = "held-*"  # the models this server answers for, in DAGWRIGHT_PROVIDERS' words
USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}


@dataclass
class Call:
    """One request as it reached the server; it is answered once released."""

    model: str
    prompt: str
    client_port: int  # the caller's end of the connection
    server_port: int
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()

    def process(self, among: Iterable[int]) -> int | None:
        """Which of the pids ``among`` holds the caller's end of this call's connection."""
        inode = _socket_inode(self.client_port, self.server_port)
        if inode is None:
            return None
        target = f"socket:[{inode}]"
        for pid in among:
            with contextlib.suppress(OSError):  # a process that exited meanwhile
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                            return pid
        return None


def _socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the loopback TCP socket from ``local_port`` to ``remote_port`` (/proc/net/tcp)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()  # sl local_address rem_address st ... uid timeout inode
                local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
                if (local, remote) == (local_port, remote_port):
                    return int(fields[9])
    return None


class _Handler(loopback.Handler):
    server: _Server

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        call = self.server.held.arrived(body, self.client_address[1])
        call.released.wait()
        reply = Reply(200, completion(f"Held answer to: {call.prompt[:80]}", model=call.model, usage=USAGE))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the caller was killed meanwhile: that was the point
            self._send(reply)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    held: HeldChatServer


class HeldChatServer:
    """Start with ``with HeldChatServer() as server:``; give workers ``server.providers()``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._seen: set[str] = set()
        self._arrival = threading.Condition()
        self._http = _Server(("127.0.0.1", 0), _Handler)
        self._http.held = self
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, name="held-chat", daemon=True)

    @property
    def port(self) -> int:
        return self._http.server_address[1]

    def providers(self, name: str = "held") -> str:
        """``DAGWRIGHT_PROVIDERS`` for a worker: ``held-*`` models served here, with a client
        timeout far beyond any hold (a held call must not time out on its own)."""
        endpoint = {"kind": "openai", "base_url": f"http://127.0.0.1:{self.port}/v1", "api_key_env": "", "timeout_seconds": 600, "models": [MODELS]}
        return json.dumps({name: endpoint})

    def arrived(self, body: dict[str, Any], client_port: int) -> Call:
        prompt = next((m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        call = Call(model=body.get("model", ""), prompt=prompt, client_port=client_port, server_port=self.port)
        with self._arrival:
            if prompt in self._seen:  # a later attempt: only the first call of each prompt is held
                call.release()
            self._seen.add(prompt)
            self.calls.append(call)
            self._arrival.notify_all()
        return call

    def held_call(self, containing: str = "") -> Call | None:
        """The first call still held whose prompt contains ``containing``, if one has arrived."""
        with self._arrival:
            return next((c for c in self.calls if containing in c.prompt and not c.released.is_set()), None)

    def wait_for_call(self, containing: str = "", timeout: float = 60) -> Call:
        """The first call still held whose prompt contains ``containing``, once it has arrived."""
        deadline = time.monotonic() + timeout
        with self._arrival:
            while True:
                found = self.held_call(containing)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f"no held call for a prompt containing {containing!r} within {timeout} s; calls: {[c.prompt[:60] for c in self.calls]}"
                self._arrival.wait(min(left, 0.5))

    def release_all(self) -> None:
        with self._arrival:
            for call in self.calls:
                call.release()

    def __enter__(self) -> HeldChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_all()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)
