"""Which provider serves a model. The only place callers get a provider from.

``sim-*`` models are always the simulated provider's. Every other model goes to the endpoint of
``settings.DAGWRIGHT_PROVIDERS`` that lists it, a dict from a provider's name (its name in the
breakers and the stored calls, at most 50 characters) to its configuration::

    DAGWRIGHT_PROVIDERS = {
        "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY",
                   "timeout_seconds": 60, "models": ["gpt-*", "o3-mini"]},
        "local": {"kind": "openai", "base_url": "http://127.0.0.1:11434/v1", "api_key_env": "", "models": ["llama3.1:8b"]},
    }

(fields and defaults: ``apps.providers.openai_compatible.ProviderConfig``). A model named exactly
wins over a prefix (``"gpt-*"``), a longer prefix over a shorter one, and between equals the
first endpoint listed. A model no endpoint lists is a permanent ``unknown_model`` error.

A run's options tune the simulation only: they never choose an endpoint, its URL or its key,
since a run's options are user input and an endpoint given by a user would receive the key.
The one routing choice they make only ever takes calls away from the endpoints: with
``options["simulate_all_models"]`` (a test run of a draft, ``apps.runs.services.run_start_test``)
every model, whatever its name, is answered by the simulated provider, so it costs nothing real.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from pydantic import ValidationError

from .base import Provider, ProviderError
from .pricing import model_price
from .simulated import SimulatedProvider, SimulationConfig, unknown_model

SIMULATED_PREFIX = "sim-"
SIMULATE_ALL_MODELS = "simulate_all_models"  # a run option: every model on the simulated provider
MAX_PROVIDER_NAME = 50  # ProviderCall.provider
EXACT_MATCH = 1_000_000  # how closely a model listed by its name matches (``_match``)


def provider_for(model: str, *, run_options: dict[str, Any] | None = None) -> Provider:
    """The provider for ``model`` configured for a run; raises a permanent ProviderError."""
    if model.startswith(SIMULATED_PREFIX) or (run_options or {}).get(SIMULATE_ALL_MODELS) is True:
        try:
            config = SimulationConfig.merged(settings.DAGWRIGHT_SIMULATION, (run_options or {}).get("simulation"))
        except (ValueError, TypeError) as exc:  # a run's options are user input (pydantic errors are ValueErrors)
            raise ProviderError(f"bad simulation options: {exc}", error_class="bad_request", retryable=False) from exc
        return SimulatedProvider(config)
    return _configured_provider(model)


def model_served(model: str) -> bool:
    """Whether a definition may name ``model``: what saving and validating a definition check.

    ``sim-*`` models always are (the simulated provider answers any of them). A model an endpoint
    lists by its exact name is. A model an endpoint only matches by a prefix (``"gpt-*"``) is
    served only if the price table knows it too (an active ``ModelPrice`` row or the built-in
    ``PRICES``): a prefix is a convenience for a family of real models, not a promise that any
    name in it exists, and ``gpt-99`` must be refused when it is written, not when a run fails.
    An admin who adds a model adds its price (which its costs need anyway) or lists it by name.
    ``provider_for`` itself still routes by prefix alone, so a configuration that changed after a
    save fails the call as ``unknown_model`` at run time, as before.
    """
    if not model:
        return False
    if model.startswith(SIMULATED_PREFIX):
        return True
    endpoints: dict[str, dict[str, Any]] = getattr(settings, "DAGWRIGHT_PROVIDERS", {})
    ranks = [_match(model, entry.get("models", ())) for entry in endpoints.values() if isinstance(entry, dict)]
    best = max(ranks, default=0)
    return best == EXACT_MATCH or (best > 0 and model_price(model) is not None)


def _match(model: str, names: list[str] | tuple[str, ...]) -> int:
    """How closely ``names`` list ``model``: 0 not at all, else higher for a closer match."""
    if model in names:
        return EXACT_MATCH
    prefixes = [n[:-1] for n in names if n.endswith("*") and model.startswith(n[:-1])]
    return 1 + max(map(len, prefixes)) if prefixes else 0


def _configured_provider(model: str) -> Provider:
    endpoints: dict[str, dict[str, Any]] = getattr(settings, "DAGWRIGHT_PROVIDERS", {})
    ranked = [(_match(model, entry.get("models", ())), name) for name, entry in endpoints.items() if isinstance(entry, dict)]
    best = max((rank for rank, _ in ranked), default=0)
    if not best or not model:
        raise unknown_model(model)
    name = next(name for rank, name in ranked if rank == best)
    # Imported here: the SDK takes half a second to import, which a site on simulated models never needs.
    from .openai_compatible import OpenAICompatibleProvider, ProviderConfig

    try:
        config = ProviderConfig.model_validate(endpoints[name])
    except ValidationError as exc:
        raise ProviderError(f"provider '{name}' is misconfigured: {exc}", error_class="provider_config", retryable=False) from exc
    if len(name) > MAX_PROVIDER_NAME:
        raise ProviderError(f"provider name '{name[:60]}…' is longer than {MAX_PROVIDER_NAME} characters", error_class="provider_config", retryable=False)
    return OpenAICompatibleProvider(name, config)
