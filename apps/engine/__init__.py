"""The pure core of Dagwright: workflow spec, graph checks, scheduling and templating.

Nothing here imports Django, Celery or app models (an import-linter contract enforces it), so the
rules can be tested in milliseconds and reused by every process.
"""
