"""OpenTelemetry: off without an endpoint, OTLP when one is set, one trace per run across processes,
and the metrics a run's nodes record (orchestrator_site.telemetry, apps.runs.telemetry)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from apps.runs.models import ProviderCall, Run, RunStatus
from apps.runs.operations import run_rerun_from
from apps.runs.services import run_start
from orchestrator_site import telemetry
from tests.conftest import ROOT
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.runs.helpers import drain, wait_for_run

FACTS = {"type": "object", "required": ["facts"], "properties": {"facts": {"type": "array", "items": {"type": "string"}}}}
# Every answer is malformed: text nodes take it as it is, the JSON node fails twice (retried once).
MALFORMED = {"simulation": {"latency": "fixed:0", "faults": {"malformed_rate": 1.0}}}


def chain_definition(name: str) -> dict[str, Any]:
    """start (tool) -> summary (llm, text) -> facts (llm, JSON: invalid twice, then failed)."""
    return definition(
        name,
        [
            tool_node("start"),
            llm_node("summary", "Summarise {{ input.topic }} in {{ nodes.start.words }} words.", depends_on=["start"]),
            llm_node(
                "facts", "List facts from: {{ nodes.summary }}", depends_on=["summary"], output_schema=FACTS, retry={"max_attempts": 2, "backoff_seconds": 0}
            ),
        ],
    )


# --- setup from the environment ----------------------------------------------------------------


def test_telemetry_is_off_without_an_endpoint_and_with_the_sdk_disabled():
    assert not telemetry.config_from_env({}).enabled
    assert telemetry.config_from_env({}).instrument == ()
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not telemetry.config_from_env({**endpoint, "OTEL_SDK_DISABLED": "true"}).enabled

    on = telemetry.config_from_env(endpoint, default_service=telemetry.WORKER_SERVICE)
    assert (on.otlp_traces, on.otlp_metrics, on.service_name) == (True, True, "dagwright-worker")
    assert on.instrument == ("django", "celery", "psycopg", "redis")
    traces_only = telemetry.config_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces", "OTEL_SERVICE_NAME": "dw-eu"})
    assert (traces_only.otlp_traces, traces_only.otlp_metrics, traces_only.service_name) == (True, False, "dw-eu")
    no_metrics = telemetry.config_from_env({**endpoint, "OTEL_METRICS_EXPORTER": "none", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis, django"})
    assert (no_metrics.otlp_traces, no_metrics.otlp_metrics, no_metrics.instrument) == (True, False, ("celery", "psycopg"))


def _python(script: str, **env: str) -> dict[str, Any]:
    """Run ``script`` in a fresh process (telemetry is set up once per process) and read the JSON
    it prints last."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != telemetry.SPANS_FILE_ENV}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


PROBE = """
import json, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
from orchestrator_site import telemetry
config = telemetry.setup()
import django
django.setup()
from django.conf import settings
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
with telemetry.tracer("probe").start_as_current_span("probe span"):
    pass
telemetry.meter("probe").create_counter("probe.calls").add(3)
for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
    getattr(provider, "shutdown", lambda: None)()
print(json.dumps({
    "enabled": config.enabled, "tracing": telemetry.tracing(), "metering": telemetry.metering(),
    "tracer_provider": type(trace.get_tracer_provider()).__name__,
    "django": any("opentelemetry" in m for m in settings.MIDDLEWARE),
    "celery": CeleryInstrumentor().is_instrumented_by_opentelemetry,
    "psycopg": PsycopgInstrumentor().is_instrumented_by_opentelemetry,
    "redis": RedisInstrumentor().is_instrumented_by_opentelemetry,
}))
"""


def test_setup_without_an_endpoint_installs_nothing_and_instruments_nothing():
    state = _python(PROBE)
    assert state == {
        "enabled": False, "tracing": False, "metering": False, "tracer_provider": "ProxyTracerProvider",
        "django": False, "celery": False, "psycopg": False, "redis": False,
    }  # fmt: skip


class _Collector(BaseHTTPRequestHandler):
    """A loopback OTLP/HTTP collector: keeps every request body by path."""

    received: dict[str, list[bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received[self.path].append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, dict[str, list[bytes]]]]:
    received: dict[str, list[bytes]] = defaultdict(list)
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Collector", (_Collector,), {"received": received}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def test_with_an_endpoint_spans_and_metrics_reach_the_otlp_collector_and_libraries_are_instrumented(collector):
    endpoint, received = collector
    state = _python(PROBE, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_METRIC_EXPORT_INTERVAL="600000")

    assert state == {
        "enabled": True, "tracing": True, "metering": True, "tracer_provider": "TracerProvider",
        "django": True, "celery": True, "psycopg": True, "redis": True,
    }  # fmt: skip
    traces = [ExportTraceServiceRequest.FromString(body) for body in received["/v1/traces"]]
    spans = [(resource, span) for request in traces for resource in request.resource_spans for scope in resource.scope_spans for span in scope.spans]
    assert [span.name for _, span in spans] == ["probe span"]
    service = {a.key: a.value.string_value for a in spans[0][0].resource.attributes}["service.name"]
    assert service == "dagwright"
    exported = [ExportMetricsServiceRequest.FromString(body) for body in received["/v1/metrics"]]
    points = [
        point.as_int
        for request in exported
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "probe.calls"
        for point in metric.sum.data_points
    ]
    assert points == [3]


# --- one run, one trace ------------------------------------------------------------------------


@pytest.fixture
def in_memory_spans() -> Iterator[InMemorySpanExporter]:
    """This process's spans kept in memory: the run span opens where the run starts, and Celery's
    publish spans (instrumented here as in the web process) carry it in the messages."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.install(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    yield exporter
    CeleryInstrumentor().uninstrument()
    telemetry.uninstall()
    provider.shutdown()


def _worker_spans(path: Path, offset: int, complete: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The worker's spans, read from its JSON-lines file past ``offset``, once ``complete(spans)``
    holds (the worker exports them in batches, a moment after they end)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_bytes()[offset:].decode() if path.exists() else ""
        spans = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]  # lines written whole
        if complete(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


def _named(spans: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [span for span in spans if span["name"].startswith(f"{kind} ")]


def _key(span: dict[str, Any]) -> tuple[str, int]:
    return span["attributes"]["dagwright.node_id"], span["attributes"]["dagwright.attempt"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_one_run_executed_by_a_real_worker_is_one_connected_trace(celery_worker, in_memory_spans, operator, client):
    spans_file = Path(celery_worker.env[telemetry.SPANS_FILE_ENV])
    offset = spans_file.stat().st_size if spans_file.exists() else 0
    version = save_workflow(chain_definition("traced-chain"))

    run = wait_for_run(run_start(workflow=version.workflow, input={"topic": "harbours"}, options=MALFORMED, started_by=operator).id)

    assert run.status == RunStatus.FAILED
    trace_id = run.trace_id
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", run.traceparent)
    assert run.traceparent.split("-")[1] == trace_id
    [root, publish] = sorted(in_memory_spans.get_finished_spans(), key=lambda span: span.start_time)
    assert (publish.name, publish.parent.span_id) == ("apply_async/runs.execute_node", root.context.span_id)
    assert (root.name, root.parent, f"{root.context.trace_id:032x}") == ("run traced-chain", None, trace_id)
    assert root.attributes["dagwright.run_id"] == str(run.id)
    root_id = f"0x{root.context.span_id:016x}"

    def in_trace(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [span for span in spans if span["context"]["trace_id"] == f"0x{trace_id}"]

    def complete(spans: list[dict[str, Any]]) -> bool:
        """Every span of the run is written, Celery's included: the worker's exporter writes them
        as they end, not in the order of the tree, so wait for the links and their parents too."""
        spans = in_trace(spans)
        if (len(_named(spans, "node")), len(_named(spans, "attempt")), len(_named(spans, "chat"))) != (4, 4, 3):
            return False
        by_id = {span["context"]["span_id"]: span for span in spans}
        linked = [by_id.get(link["context"]["span_id"]) for span in _named(spans, "node") for link in span["links"]]
        return all(task is not None and task["parent_id"] in by_id for task in linked)

    every = _worker_spans(spans_file, offset, complete)
    assert not [span["name"] for span in every if span["parent_id"] is None and span["kind"] == "SpanKind.CLIENT"], "housekeeping roots are dropped"
    spans = in_trace(every)
    nodes, attempts, chats = _named(spans, "node"), _named(spans, "attempt"), _named(spans, "chat")
    assert sorted(map(_key, nodes)) == [("facts", 1), ("facts", 2), ("start", 1), ("summary", 1)]
    assert all(span["parent_id"] == root_id for span in nodes), "every node span is a child of the run span"
    node_ids = {_key(span): span["context"]["span_id"] for span in nodes}
    assert {_key(span): span["parent_id"] for span in attempts} == node_ids, "each attempt under its node"
    attempt_ids = {_key(span): span["context"]["span_id"] for span in attempts}
    assert all(span["parent_id"] == attempt_ids[_key(span)] for span in chats), "each provider call under its attempt"
    ours = [span for span in spans if span["attributes"].get("dagwright.run_id")]
    assert all(span["attributes"]["dagwright.run_id"] == str(run.id) for span in ours)
    assert {span["resource"]["attributes"]["service.name"] for span in ours} == {"dagwright-worker"}

    status = {_key(span): (span["attributes"]["dagwright.node.status"], span["status"]["status_code"]) for span in nodes}
    assert status == {
        ("start", 1): ("succeeded", "UNSET"), ("summary", 1): ("succeeded", "UNSET"),
        ("facts", 1): ("retry_wait", "UNSET"), ("facts", 2): ("failed", "ERROR"),
    }  # fmt: skip
    assert {_key(span): span["attributes"].get("error.type") for span in nodes if span["attributes"].get("error.type")} == {
        ("facts", 1): "invalid_output",
        ("facts", 2): "invalid_output",
    }

    # Celery's own spans join the trace: the retry's message was sent under the first attempt's node
    # span, and the second attempt's node span links to the task that carried it.
    by_id = {span["context"]["span_id"]: span for span in spans}
    [retry_node] = [span for span in nodes if _key(span) == ("facts", 2)]
    [task] = [by_id[link["context"]["span_id"]] for link in retry_node["links"]]
    assert task["name"] == "run/runs.execute_node"
    assert by_id[by_id[task["parent_id"]]["parent_id"]] is by_id[node_ids[("facts", 1)]]
    [first_task] = [span for span in spans if span["parent_id"] == f"0x{publish.context.span_id:016x}"]
    assert first_task["name"] == "run/runs.execute_node"
    [start] = [span for span in nodes if _key(span) == ("start", 1)]
    assert [link["context"]["span_id"] for link in start["links"]] == [first_task["context"]["span_id"]]

    by_call = {_key(span): span for span in chats}
    calls = ProviderCall.objects.filter(run=run).select_related("node_run").order_by("id")
    assert len(calls) == len(chats) == 3
    for call in calls:
        span = by_call[(call.node_run.node_id, call.attempt)]
        attributes = span["attributes"]
        assert span["kind"] == "SpanKind.CLIENT"
        assert span["name"] == f"chat {call.request['model']}"
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == call.provider == "simulated"
        assert (attributes["gen_ai.request.model"], attributes["gen_ai.response.model"]) == (call.request["model"], call.model)
        assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (call.tokens_in, call.tokens_out)
        assert call.tokens_in > 0
        assert call.tokens_out > 0
        assert Decimal(str(attributes["dagwright.cost"])) == call.cost
        assert (attributes["dagwright.node_id"], attributes["dagwright.run_id"], attributes["dagwright.workflow"]) == (
            call.node_run.node_id,
            str(run.id),
            "traced-chain",
        )
        assert attributes.get("error.type", "") == call.error_class
        assert span["status"]["status_code"] == ("ERROR" if call.error_class else "UNSET")
    assert [c.error_class for c in calls] == ["", "invalid_output", "invalid_output"]

    client.force_login(operator)
    page = client.get(reverse("console:run", args=[run.id])).content.decode()
    assert re.search(rf'<dt>Trace</dt><dd><code id="run-trace"[^>]*>{trace_id}</code>', page)


def test_a_rerun_is_a_trace_of_its_own_linked_to_its_source(db, in_memory_spans, operator):
    run = drain(run_start(workflow=save_workflow().workflow, input={"topic": "harbours"}, options={"simulation": {"latency": "fixed:0"}}))

    rerun = run_rerun_from(run=run, node_id="answer", by=operator)

    assert rerun.trace_id
    assert rerun.trace_id != run.trace_id
    roots = {span.attributes["dagwright.run_id"]: span for span in in_memory_spans.get_finished_spans() if span.name.startswith("run ")}
    assert [link.context.span_id for link in roots[str(rerun.id)].links] == [roots[str(run.id)].context.span_id]
    assert Run.objects.get(pk=rerun.pk).traceparent == rerun.traceparent


def test_housekeeping_roots_are_dropped_and_the_same_calls_inside_a_trace_kept():
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.sampler = telemetry.HousekeepingFilter(provider.sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("ZREM HDEL", kind=SpanKind.CLIENT):  # a broker acknowledgement: no parent
        pass
    with tracer.start_as_current_span("apply_async/runs.probe", kind=SpanKind.PRODUCER):
        tracer.start_span("run/runs.probe", kind=SpanKind.CONSUMER).end()
    with tracer.start_as_current_span("node answer"):
        tracer.start_span("HGETALL", kind=SpanKind.CLIENT).end()

    assert sorted(span.name for span in exporter.get_finished_spans()) == ["HGETALL", "node answer"]


def test_a_run_started_with_tracing_off_has_no_traceparent(db):
    run = run_start(workflow=save_workflow().workflow, input={"topic": "harbours"})
    assert (run.traceparent, run.trace_id) == ("", "")
    assert Run.objects.get(pk=run.pk).traceparent == ""


# --- metrics -----------------------------------------------------------------------------------


@pytest.fixture
def metric_reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.install(meter_provider=provider)
    yield reader
    telemetry.uninstall()
    provider.shutdown()


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = defaultdict(list)
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name].extend(metric.data.data_points)
    return found


def test_nodes_record_duration_tokens_cost_and_failures(db, metric_reader):
    version = save_workflow(chain_definition("metered-chain"))

    run = drain(run_start(workflow=version.workflow, input={"topic": "harbours"}, options=MALFORMED))

    assert run.status == RunStatus.FAILED
    points = _points(metric_reader)
    durations = Counter()
    for point in points["dagwright.node.duration"]:
        attributes = point.attributes
        assert attributes["dagwright.workflow"] == "metered-chain"
        assert "dagwright.run_id" not in attributes
        assert point.sum >= 0
        durations[(attributes["dagwright.node_id"], attributes["dagwright.node.type"], attributes["dagwright.node.status"])] += point.count
    assert durations == {
        ("start", "tool", "succeeded"): 1,
        ("summary", "llm", "succeeded"): 1,
        ("facts", "llm", "retry_wait"): 1,
        ("facts", "llm", "failed"): 1,
    }

    calls = ProviderCall.objects.filter(run=run).select_related("node_run")
    tokens = {(p.attributes["dagwright.node_id"], p.attributes["gen_ai.token.type"]): p.value for p in points["dagwright.tokens"]}
    expected = defaultdict(int)
    for call in calls:
        expected[(call.node_run.node_id, "input")] += call.tokens_in
        expected[(call.node_run.node_id, "output")] += call.tokens_out
    assert tokens == expected
    assert {p.attributes["gen_ai.response.model"] for p in points["dagwright.tokens"]} == {"sim-fast"}
    assert {p.attributes["gen_ai.provider.name"] for p in points["dagwright.tokens"]} == {"simulated"}
    cost = {p.attributes["dagwright.node_id"]: p.value for p in points["dagwright.cost"]}
    by_node = defaultdict(Decimal)
    for call in calls:
        by_node[call.node_run.node_id] += call.cost
    assert cost.keys() == by_node.keys() == {"summary", "facts"}
    assert all(cost[n] == pytest.approx(float(by_node[n]), abs=1e-9) for n in cost)
    assert run.cost == sum(by_node.values())

    failures = {
        (p.attributes["dagwright.node_id"], p.attributes["gen_ai.request.model"], p.attributes["error.type"], p.attributes["dagwright.node.status"]): p.value
        for p in points["dagwright.node.failures"]
    }
    assert failures == {("facts", "sim-fast", "invalid_output", "retry_wait"): 1, ("facts", "sim-fast", "invalid_output", "failed"): 1}


def test_without_telemetry_installed_nothing_is_recorded(db, metric_reader):
    telemetry.uninstall()
    version = save_workflow(chain_definition("unmetered-chain"))

    drain(run_start(workflow=version.workflow, input={"topic": "harbours"}, options=MALFORMED))

    assert not _points(metric_reader)
