"""docker-compose.yml cannot be run here (no Docker engine), so its shape is checked by reading."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_five_services():
    assert set(COMPOSE["services"]) == {"postgres", "redis", "web", "worker", "beat"}


def test_web_worker_and_beat_share_one_environment_pointing_at_postgres_and_redis():
    envs = [COMPOSE["services"][name]["environment"] for name in ("web", "worker", "beat")]
    assert envs[0] == envs[1] == envs[2]
    assert envs[0]["DATABASE_URL"].startswith("postgres://")
    assert envs[0]["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert envs[0]["REDIS_URL"].startswith("redis://redis:")


def test_processes_run_the_project_entry_points():
    services = COMPOSE["services"]
    assert "gunicorn orchestrator_site.wsgi:application" in services["web"]["command"]
    assert "migrate" in services["web"]["command"]
    assert services["worker"]["command"].startswith("celery -A orchestrator_site worker")
    assert services["beat"]["command"].startswith("celery -A orchestrator_site beat")
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_pinned_requirement_is_exact():
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert lines
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]


def test_compose_has_no_secret_key_of_its_own():
    # unset, the site refuses to start and names DJANGO_SECRET_KEY (tests/site/test_settings.py)
    assert COMPOSE["x-dagwright"]["environment"]["DJANGO_SECRET_KEY"] == "${DJANGO_SECRET_KEY:-}"
