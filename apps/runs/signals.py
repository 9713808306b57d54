"""Run and node events as Django signals, sent inside the transaction of the transition.

Receivers that write (the event log) therefore commit or roll back with the transition itself;
receivers with outside effects (telemetry, notifications) should defer to ``on_commit``.
Every signal is sent with ``run`` and keyword arguments named below.
"""

from django.dispatch import Signal

run_created = Signal()  # run
run_started = Signal()  # run
run_paused = Signal()  # run (every branch that can still go on waits for a review: running -> waiting_review)
run_resumed = Signal()  # run (waiting_review -> running)
run_finished = Signal()  # run, status, error
nodes_queued = Signal()  # run, node_ids
nodes_skipped = Signal()  # run, node_ids, reasons (node id -> why: a router chose another route, or a trigger rule)
node_started = Signal()  # run, node_run
node_succeeded = Signal()  # run, node_run
node_failed = Signal()  # run, node_run, error, error_class
node_waiting_review = Signal()  # run, node_run (its input: the frozen output under review), node (the ReviewNode spec)
node_reviewed = Signal()  # run, node_run, decision (the gate's output), status (succeeded | failed)
node_retrying = Signal()  # run, node_run, error, error_class, next_attempt_at, deferred
node_lease_expired = Signal()  # run, node_run (the attempt whose worker stopped renewing its lease)
provider_response_reused = Signal()  # run, node_run, call_id
nodes_cancelled = Signal()  # run, node_ids, reason
run_cancelled = Signal()  # run, by (the user who cancelled it, or None)
run_retried = Signal()  # run, by, node_ids (the nodes put back to pending)
run_rerun_created = Signal()  # run (the new run), source, node_id, by, reused (node ids whose outputs were copied)
