"""The embedded broker never hands a consumer a half-written message."""

from __future__ import annotations

import threading

from kombu import Connection

from orchestrator_site import broker


def folders(tmp_path) -> dict[str, str]:
    return {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "control_folder": str(tmp_path / "control")}


def test_filesystem_scheme_uses_the_atomic_transport(tmp_path):
    broker.install()
    with Connection("filesystem://", transport_options=folders(tmp_path)) as conn:
        assert conn.transport_cls == "filesystem"
        assert isinstance(conn.default_channel, broker.Channel)


def test_a_consumer_polling_while_large_messages_are_written_reads_every_one_whole(tmp_path):
    options = folders(tmp_path)
    count, body = 200, "x" * 200_000  # large payloads widen the write window of the stock transport
    received: list[dict] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with Connection("filesystem://", transport_options={**options, "polling_interval": 0}) as conn:
                queue = conn.SimpleQueue("atomic")
                while len(received) < count:
                    message = queue.get(timeout=30)
                    received.append(message.payload)
                    message.ack()
        except BaseException as exc:
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    with Connection("filesystem://", transport_options=options) as conn:
        queue = conn.SimpleQueue("atomic")
        for i in range(count):
            queue.put({"i": i, "body": body})
    consumer.join(timeout=60)

    assert not errors, errors
    assert sorted(m["i"] for m in received) == list(range(count))
    assert all(len(m["body"]) == len(body) for m in received)


def test_processes_binding_queues_at_once_never_leave_an_empty_or_partial_exchange_table(tmp_path):
    """Many connections declare their queues on one exchange while others read its table."""
    options = folders(tmp_path)
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def bind(i: int) -> None:
        try:
            with Connection("filesystem://", transport_options=options) as conn:
                barrier.wait()
                conn.SimpleQueue(f"q{i}")  # declares and binds q{i} on the shared exchange
                conn.default_channel.get_table("q0")  # reads a table others may be creating
        except BaseException as exc:
            errors.append(exc)

    for _ in range(10):
        for path in (tmp_path / "control").glob("*"):
            path.unlink()
        threads = [threading.Thread(target=bind, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
