"""The embedded default's broker: kombu's filesystem transport, with atomic writes.

kombu's ``filesystem.Channel._put`` creates the message file under its final name and only then
writes the payload. A worker polling the folder can take the file in between, read an empty
payload and die on a JSONDecodeError in its consumer loop, losing the message (the same symptom
as celery/kombu#1551). Writing under a name consumers ignore (they take only
``<stamp>.<queue>.msg``), then renaming within the folder, which POSIX makes atomic, closes the
window. ``install()`` points the ``filesystem://`` scheme at this transport.

Its exchange tables have the same flaw: the first binding creates the file empty and locks it
only afterwards, so a publisher reading it in between gets an empty table and a JSONDecodeError,
and two processes binding at once can overwrite each other. The first binding here is written
complete to a private file and linked into place (``os.link`` fails if the file exists); later
bindings take kombu's locked read-merge-write path. And within one process kombu records a
binding in memory before writing its file, so a second thread could see "already bound", publish,
find no table and drop the message: binds here run one at a time per process.
"""

from __future__ import annotations

import os
import threading
import uuid
from time import monotonic
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

_binding = threading.Lock()


class Channel(filesystem.Channel):
    def queue_bind(self, *args: Any, **kwargs: Any) -> Any:
        with _binding:  # the in-memory record and the file are written as one step
            return super().queue_bind(*args, **kwargs)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        table = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        if not table.exists():
            row = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
            partial = table.with_name(f".partial-{uuid.uuid4()}-{table.name}")
            partial.write_bytes(dumps([row]).encode())
            try:
                os.link(partial, table)  # create-if-absent, already complete
                return
            except FileExistsError:
                pass  # another process created it first: merge into it below
            finally:
                partial.unlink(missing_ok=True)
        super()._queue_bind(exchange, routing_key, pattern, queue)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        partial = os.path.join(self.data_folder_out, f".partial-{name}")
        with open(partial, "wb") as f:
            f.write(dumps(payload).encode())
        os.replace(partial, os.path.join(self.data_folder_out, name))


class Transport(filesystem.Transport):
    Channel = Channel


def install() -> None:
    TRANSPORT_ALIASES["filesystem"] = "orchestrator_site.broker:Transport"
