from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "apps.runs"
    label = "runs"

    def ready(self) -> None:
        from . import receivers, telemetry, tools  # noqa: F401  (the event log's and telemetry's receivers; built-in tools)
