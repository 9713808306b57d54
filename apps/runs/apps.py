from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "apps.runs"
    label = "runs"

    def ready(self) -> None:
        from . import receivers, tools  # noqa: F401  (the event log's receivers; built-in tools)
