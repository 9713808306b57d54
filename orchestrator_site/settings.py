"""Dagwright settings. Everything comes from the environment, with defaults that work offline.

Embedded default: SQLite and Celery's filesystem transport under ``var/``, the simulated model
provider. ``DATABASE_URL=postgres://...`` and ``CELERY_BROKER_URL=redis://...`` switch to
PostgreSQL and Redis with no code change.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("DAGWRIGHT_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated variable, each entry trimmed, empty entries dropped."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEVELOPMENT_SECRET_KEY = "dagwright-local-development-only-not-secret"
# Keys that are public (this file, docker-compose.yml's old default, the README's placeholder): a
# site signing with one signs nothing, so with DEBUG off it refuses to start instead.
PUBLIC_SECRET_KEYS = frozenset(
    {
        "",
        DEVELOPMENT_SECRET_KEY,
        "change-me-in-production",
        "change-me",
        "changeme",
        "secret",
        "replace-with-the-output-of-python-c-import-secrets-print-secrets-token-urlsafe-50",
    }
)

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY.strip() in PUBLIC_SECRET_KEYS:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is unset or a public placeholder while DJANGO_DEBUG is off: set DJANGO_SECRET_KEY to a long random value "
        '(python -c "import secrets; print(secrets.token_urlsafe(50))")'
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- HTTPS (behind a proxy) -------------------------------------------------------------------
# Off by default: the local demo is plain HTTP. The README's production variables turn them on.
# The proxy that ends TLS names the scheme in a header (X-Forwarded-Proto: https); only trust it
# when that proxy always sets or strips it.
# The header's name as sent (X-Forwarded-Proto) or as Django's META key (HTTP_X_FORWARDED_PROTO).
_proxy_ssl_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip().upper().replace("-", "_")
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header if _proxy_ssl_header.startswith("HTTP_") else "HTTP_" + _proxy_ssl_header, "https") if _proxy_ssl_header else None
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "csp",
    "axes",
    "django_htmx",
    "template_partials",
    "ninja",
    "apps.workflows",
    "apps.runs",
    "apps.reviews",
    "apps.audit",
    "apps.providers",
    "apps.console",
    "apps.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "orchestrator_site.middleware.security_headers",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a refused sign-in into the lockout answer
]

# --- Content-Security-Policy (django-csp 4) ------------------------------------------------------
# Scripts and styles come only from our own static files: no inline <script>, no event-handler
# attributes, no style="" attributes (bars are SVG with width attributes instead; CodeMirror sets
# its sizes through the CSSOM, which the policy does not govern), htmx configured
# not to eval nor to inject its indicator <style> (templates/base.html). Model output shown on a
# page can therefore run nothing, even if escaping ever failed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        # the nonce is in the header only on pages that use it: the editor, whose CodeMirror
        # writes <style> elements carrying it (frontend/editor.js)
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Browser features no page uses, refused for the page and anything it might embed.
DAGWRIGHT_PERMISSIONS_POLICY = {
    feature: "()" for feature in ("accelerometer", "camera", "geolocation", "gyroscope", "magnetometer", "microphone", "payment", "usb")
}

ROOT_URLCONF = "orchestrator_site.urls"
WSGI_APPLICATION = "orchestrator_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

# --- database -------------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'dagwright.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A worker and the web process write at once: WAL lets readers go on while one writes,
    # IMMEDIATE takes the write lock at BEGIN (no upgrade deadlocks), the timeout waits it out.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_dagwright.sqlite3")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- auth, i18n, static -----------------------------------------------------------------------
# Login throttling (django-axes, see orchestrator_site.logins): the console's and the admin's
# sign-in both go through authenticate(), where Axes counts failures per username and per client
# (wrong API tokens per client: apps.api.auth) and refuses the next attempt once either count
# reaches the limit, until the cool-off has passed. Admins see and delete lockouts under Axes.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("DAGWRIGHT_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(seconds=float(os.environ.get("DAGWRIGHT_LOGIN_COOLOFF_SECONDS", "900")))
AXES_LOCKOUT_PARAMETERS = "orchestrator_site.logins.lockout_parameters"
AXES_CLIENT_IP_CALLABLE = "orchestrator_site.logins.client_address"
AXES_USERNAME_CALLABLE = "orchestrator_site.logins.client_username"
AXES_LOCKOUT_CALLABLE = "orchestrator_site.logins.lockout_response"
AXES_RESET_ON_SUCCESS = True
# The cool-off runs from the lockout: retrying while locked out does not push its end further
# away, so the time the lockout answer names holds.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_VERBOSE = False  # no banner from every process at start; failures and lockouts are still logged
# How many proxies in front of Django append to X-Forwarded-For; 0 (the default) trusts none of it.
DAGWRIGHT_TRUSTED_PROXIES = int(os.environ.get("DAGWRIGHT_TRUSTED_PROXIES", "0"))

AUTH_PASSWORD_VALIDATORS = [{"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"}]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:runs"
LOGOUT_REDIRECT_URL = "login"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request while it is missing
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem"):
    _broker_dir = VAR_DIR / "broker"
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": float(os.environ.get("DAGWRIGHT_BROKER_POLL_SECONDS", "0.02")),
    }
CELERY_VISIBILITY_TIMEOUT = int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))
if not CELERY_BROKER_URL.startswith("filesystem"):
    # Redis redelivers a message unacknowledged for this long; every countdown stays well under
    # it (DAGWRIGHT_MAX_COUNTDOWN_SECONDS) and longer waits are left to the sweeper.
    # kombu looks for such messages only every interval x throttle seconds (10 x 10 by default),
    # so a short timeout went unenforced for up to 100 s: look at least four times per timeout.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
        "unacked_restore_interval": max(1, min(10, CELERY_VISIBILITY_TIMEOUT // 4)),
        "unacked_restore_throttle": 1,
    }
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("DAGWRIGHT_QUEUE", "dagwright")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# On a lost broker connection, let running nodes finish: their results are written by
# compare-and-set and their redelivered messages are dropped by the claim.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_ALWAYS_EAGER = False
# The consumer watchdog (orchestrator_site.watchdog) probes each worker through its own direct
# queue; on by default with Redis, where workers have been seen to stop consuming after a reset.
DAGWRIGHT_WATCHDOG_SECONDS = float(os.environ.get("DAGWRIGHT_WATCHDOG_SECONDS", "0" if CELERY_BROKER_URL.startswith("filesystem") else "15"))
DAGWRIGHT_WATCHDOG_TIMEOUT_SECONDS = float(os.environ.get("DAGWRIGHT_WATCHDOG_TIMEOUT_SECONDS", "60"))
DAGWRIGHT_WATCHDOG_GRACE_SECONDS = float(os.environ.get("DAGWRIGHT_WATCHDOG_GRACE_SECONDS", "10"))
CELERY_WORKER_DIRECT = DAGWRIGHT_WATCHDOG_SECONDS > 0
# Celery's Django fixup closes every database connection before and after each task unless this
# is set: a new PostgreSQL backend per node (measured by bench/overhead: 0.9 connections per
# node). Reuse them; Django still drops a connection past CONN_MAX_AGE or after an error.
CELERY_DB_REUSE_MAX = int(os.environ.get("CELERY_DB_REUSE_MAX", "1000"))

REDIS_URL = os.environ.get("REDIS_URL", "")

# --- Dagwright --------------------------------------------------------------------------------
# Durable execution (see apps.runs.leases and apps.runs.sweeper).
DAGWRIGHT_LEASE_SECONDS = float(os.environ.get("DAGWRIGHT_LEASE_SECONDS", "60"))
DAGWRIGHT_SWEEP_SECONDS = float(os.environ.get("DAGWRIGHT_SWEEP_SECONDS", "5"))
DAGWRIGHT_REDISPATCH_SECONDS = float(os.environ.get("DAGWRIGHT_REDISPATCH_SECONDS", "60"))
DAGWRIGHT_MAX_COUNTDOWN_SECONDS = min(float(os.environ.get("DAGWRIGHT_MAX_COUNTDOWN_SECONDS", "300")), CELERY_VISIBILITY_TIMEOUT / 2)
# Circuit breakers per (provider, model), shared through Redis when REDIS_URL is set.
DAGWRIGHT_BREAKER = {
    "failure_threshold": int(os.environ.get("DAGWRIGHT_BREAKER_THRESHOLD", "5")),
    "open_seconds": float(os.environ.get("DAGWRIGHT_BREAKER_OPEN_SECONDS", "30")),
    "probe_timeout_seconds": float(os.environ.get("DAGWRIGHT_BREAKER_PROBE_TIMEOUT_SECONDS", "60")),
    "probe_wait_seconds": float(os.environ.get("DAGWRIGHT_BREAKER_PROBE_WAIT_SECONDS", "1")),
    "key_prefix": os.environ.get("DAGWRIGHT_BREAKER_KEY_PREFIX", "dagwright:breaker:"),
}
# A sweep waits in the nodes' queue. Expiring it after one interval dropped every sweep while the
# queue was longer than that, so under load nobody recovered a dead worker's nodes: a late sweep
# still runs; only one that waited minutes (no worker was up) is dropped rather than repeated.
DAGWRIGHT_SWEEP_EXPIRES_SECONDS = max(600.0, 10 * DAGWRIGHT_SWEEP_SECONDS)
# Overdue reviews escalate as their definition says; checked this often.
DAGWRIGHT_REVIEW_ESCALATION_SECONDS = float(os.environ.get("DAGWRIGHT_REVIEW_ESCALATION_SECONDS", "30"))
CELERY_BEAT_SCHEDULE = {
    "sweep": {"task": "runs.sweep", "schedule": DAGWRIGHT_SWEEP_SECONDS, "options": {"expires": DAGWRIGHT_SWEEP_EXPIRES_SECONDS}},
    "escalate-reviews": {
        "task": "reviews.escalate",
        "schedule": DAGWRIGHT_REVIEW_ESCALATION_SECONDS,
        "options": {"expires": max(600.0, 10 * DAGWRIGHT_REVIEW_ESCALATION_SECONDS)},
    },
}
# The simulated provider's defaults; a run may override them (see apps.providers.simulated).
DAGWRIGHT_SIMULATION = {
    "seed": int(os.environ.get("DAGWRIGHT_SIM_SEED", "7")),
    "latency": os.environ.get("DAGWRIGHT_SIM_LATENCY", "lognormal:400:0.5"),
    "faults": json.loads(os.environ.get("DAGWRIGHT_SIM_FAULTS", "{}")),  # see apps.providers.faults
}
DAGWRIGHT_DEMO = env_bool("DAGWRIGHT_DEMO", False)
# OpenAI-compatible endpoints (apps.providers.openai_compatible): a JSON object in
# DAGWRIGHT_PROVIDERS, or one endpoint from OPENAI_* variables. Keys are referenced by the name of
# their environment variable, never stored.
DAGWRIGHT_PROVIDERS = json.loads(os.environ.get("DAGWRIGHT_PROVIDERS", "") or "null") or {
    "openai": {
        "kind": "openai",
        "base_url": os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
        "api_key_env": os.environ.get("OPENAI_API_KEY_ENV", "OPENAI_API_KEY"),
        "timeout_seconds": float(os.environ.get("DAGWRIGHT_PROVIDER_TIMEOUT", "60")),
        "models": [m for m in os.environ.get("OPENAI_MODELS", "gpt-*").split(",") if m],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
