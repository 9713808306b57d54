"""OpenTelemetry: the SDK set up once per process from the standard ``OTEL_*`` variables.

**Off unless asked.** With no OTLP endpoint the process keeps no-op providers: spans do not record,
metrics are dropped, nothing is instrumented, and the code that opens spans costs a few function
calls per node. ``OTEL_SDK_DISABLED=true`` keeps it off whatever else is set.

**On.** ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` for one signal) sends traces and metrics over OTLP/HTTP with
protobuf (the collector's port 4318). The exporters read the other standard variables themselves
(headers, timeout, compression, certificates) and the SDK reads ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and
``OTEL_METRIC_EXPORT_INTERVAL``. ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_METRICS_EXPORTER=none``
turns one signal off; ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (any of django, celery, psycopg,
redis) leaves those libraries alone. Django, Celery, psycopg and Redis are instrumented with the
official instrumentation packages.

``DAGWRIGHT_OTEL_SPANS_FILE=/path/spans.jsonl`` also appends every finished span to that file as one
JSON line (``ReadableSpan.to_json``): the test suite's worker process writes the spans a test
reads back, and it serves to look at a run's spans without a collector.

**Who calls ``setup``.** ``wsgi.py`` and ``manage.py`` (the web process, service ``dagwright``)
and the Celery worker (``orchestrator_site.celery``: each prefork child in ``worker_process_init``,
since the SDK's export threads do not survive a fork, or the worker process itself for the thread
and solo pools, service ``dagwright-worker``). A second call does nothing.

Dagwright's own spans and metrics come from ``tracer()`` and ``meter()`` here, which serve the
providers this module installed rather than the OpenTelemetry globals (which can be set only once
per process): a test can ``install`` an in-memory exporter or metric reader for its own duration and
``uninstall`` it afterwards.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace

log = logging.getLogger(__name__)

WEB_SERVICE = "dagwright"
WORKER_SERVICE = "dagwright-worker"
SPANS_FILE_ENV = "DAGWRIGHT_OTEL_SPANS_FILE"
INSTRUMENTED = ("django", "celery", "psycopg", "redis")


@dataclass(frozen=True)
class TelemetryConfig:
    """What the environment asks for; ``config_from_env`` reads it, ``setup`` applies it."""

    service_name: str
    otlp_traces: bool = False
    otlp_metrics: bool = False
    spans_file: str = ""
    instrument: tuple[str, ...] = ()

    @property
    def tracing(self) -> bool:
        return self.otlp_traces or bool(self.spans_file)

    @property
    def enabled(self) -> bool:
        return self.tracing or self.otlp_metrics


def _on(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() == "true"


def _exporter_wanted(environ: Mapping[str, str], signal: str) -> bool:
    endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    chosen = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").strip().lower()
    if chosen not in ("otlp", "none"):
        log.warning("OTEL_%s_EXPORTER=%s is not supported here: only otlp (over HTTP) or none", signal.upper(), chosen)
    return bool(endpoint) and chosen != "none"


def config_from_env(environ: Mapping[str, str] | None = None, *, default_service: str = WEB_SERVICE) -> TelemetryConfig:
    """The telemetry the environment asks for (``os.environ`` by default); off when nothing does."""
    environ = os.environ if environ is None else environ
    service = environ.get("OTEL_SERVICE_NAME", "").strip() or default_service
    if _on(environ, "OTEL_SDK_DISABLED"):
        return TelemetryConfig(service)
    otlp_traces, otlp_metrics = _exporter_wanted(environ, "traces"), _exporter_wanted(environ, "metrics")
    spans_file = environ.get(SPANS_FILE_ENV, "").strip()
    if not (otlp_traces or otlp_metrics or spans_file):
        return TelemetryConfig(service)
    protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: Dagwright exports OTLP over HTTP (protobuf)", protocol)
    disabled = {name.strip() for name in environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    instrument = tuple(name for name in INSTRUMENTED if name not in disabled)
    return TelemetryConfig(service, otlp_traces, otlp_metrics, spans_file, instrument)


@dataclass
class _Installed:
    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    tracing: bool = False
    metering: bool = False


_NO_OP = _Installed(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())
_installed = _NO_OP
_setup_done = False
_lock = threading.Lock()


def tracer(name: str) -> trace.Tracer:
    """A tracer of the installed provider (a no-op one when telemetry is off)."""
    return _installed.tracer_provider.get_tracer(name)


def meter(name: str) -> metrics.Meter:
    """A meter of the installed provider (a no-op one when telemetry is off)."""
    return _installed.meter_provider.get_meter(name)


def meter_provider() -> metrics.MeterProvider:
    return _installed.meter_provider


def tracing() -> bool:
    """Spans record: worth computing their attributes."""
    return _installed.tracing


def metering() -> bool:
    """Metrics are collected: worth recording them."""
    return _installed.metering


def install(*, tracer_provider: trace.TracerProvider | None = None, meter_provider: metrics.MeterProvider | None = None) -> None:
    """Serve these providers to Dagwright's spans and metrics (``setup`` does it from the
    environment; tests do it with an in-memory exporter or reader)."""
    global _installed
    _installed = _Installed(
        tracer_provider or _NO_OP.tracer_provider, meter_provider or _NO_OP.meter_provider, tracer_provider is not None, meter_provider is not None
    )


def uninstall() -> None:
    """Back to no-op providers (tests)."""
    global _installed
    _installed = _NO_OP


def setup(*, service_name: str = WEB_SERVICE, environ: Mapping[str, str] | None = None) -> TelemetryConfig:
    """Set up OpenTelemetry for this process from the environment, once; cheap when it is off.

    ``service_name`` is the default for ``OTEL_SERVICE_NAME``. Returns the configuration applied
    (the first call's, on later calls).
    """
    global _setup_done
    config = config_from_env(environ, default_service=service_name)
    with _lock:
        if _setup_done or not config.enabled:
            _setup_done = True
            return config
        _setup_done = True
        tracer_provider, meter_provider = build_providers(config)
        if tracer_provider is not None:
            trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None:
            metrics.set_meter_provider(meter_provider)
        install(tracer_provider=tracer_provider, meter_provider=meter_provider)
        _instrument(config.instrument)
    log.info("OpenTelemetry on for %s: traces %s, metrics %s", config.service_name, config.tracing, config.otlp_metrics)
    return config


def build_providers(config: TelemetryConfig) -> tuple[Any, Any]:
    """The SDK's tracer and meter providers for ``config`` (None for a signal that is off)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({})  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: config.service_name}))
    tracer_provider = meter_provider = None
    if config.tracing:
        tracer_provider = TracerProvider(resource=resource)  # its sampler: OTEL_TRACES_SAMPLER, parent-based always-on by default
        tracer_provider.sampler = HousekeepingFilter(tracer_provider.sampler)  # before any tracer is made: they copy it
        if config.otlp_traces:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if config.spans_file:
            # Written as each span ends, with no export thread: a reader of the file sees a span as soon as it is over.
            tracer_provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(config.spans_file)))
    if config.otlp_metrics:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())], resource=resource)
    return tracer_provider, meter_provider


def _instrument(names: Sequence[str]) -> None:
    """The official instrumentations, on the global providers ``setup`` just set."""
    if "django" in names and os.environ.get("DJANGO_SETTINGS_MODULE"):
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument()  # adds its middleware: call before the WSGI handler loads them
    if "celery" in names:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()
    if "psycopg" in names:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        PsycopgInstrumentor().instrument()
    if "redis" in names:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument()


class HousekeepingFilter:
    """The configured sampler, except for root spans that are housekeeping, dropped: a Redis
    command or an SQL query outside any traced operation (a client span with no parent: the
    broker's polling and acknowledgements, connection checks), and the consumer watchdog's probe.
    Without it every message a worker acknowledges would be a trace of its own. The same calls
    made inside a traced operation (a node's attempt, a request) stay in its trace."""

    PROBES = frozenset({"apply_async/runs.probe", "run/runs.probe"})

    def __init__(self, delegate: Any):
        from opentelemetry.sdk.trace.sampling import Decision, SamplingResult

        self.delegate, self.drop = delegate, SamplingResult(Decision.DROP)

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not trace.get_current_span(parent_context).get_span_context().is_valid and (kind == trace.SpanKind.CLIENT or name in self.PROBES):
            return self.drop
        return self.delegate.should_sample(parent_context, trace_id, name, kind, *args, **kwargs)

    def get_description(self) -> str:
        return f"HousekeepingFilter{{{self.delegate.get_description()}}}"


class JsonLinesSpanExporter:
    """Appends finished spans to a file, one JSON object a line, in one ``write`` per batch
    (``O_APPEND``: several worker processes may share the file)."""

    def __init__(self, path: str):
        self.path = path

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        data = "".join(span.to_json(indent=None) + "\n" for span in spans).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
