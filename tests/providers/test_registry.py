"""Which provider serves a model; unknown models and bad options fail permanently."""

from __future__ import annotations

import pytest

from apps.providers.base import ModelRequest, ProviderError
from apps.providers.registry import provider_for
from apps.providers.simulated import Latency, SimulatedProvider


@pytest.fixture(autouse=True)
def _fast_simulation(settings) -> None:
    settings.DAGWRIGHT_SIMULATION = {"seed": 7, "latency": "fixed:0"}


def test_simulated_models_get_the_simulated_provider_with_site_settings() -> None:
    provider = provider_for("sim-fast")

    assert isinstance(provider, SimulatedProvider)
    assert provider.config.seed == 7
    assert provider.config.latency == Latency(kind="fixed", a=0)


def test_run_options_override_the_site_settings() -> None:
    provider = provider_for("sim-smart", run_options={"simulation": {"seed": 99}})

    assert provider.config.seed == 99
    assert provider.complete(ModelRequest(model="sim-smart", prompt="hello")).provider == "simulated"


def test_run_options_change_the_response() -> None:
    request = ModelRequest(model="sim-fast", prompt="Describe the quarterly report for the team.")

    default = provider_for("sim-fast").complete(request)
    reseeded = provider_for("sim-fast", run_options={"simulation": {"seed": 8}}).complete(request)

    assert default.text != reseeded.text


@pytest.mark.parametrize("model", ["gpt-unknown", "simulated", "", "SIM-fast"])
def test_unknown_model_is_a_permanent_error(model: str, settings) -> None:
    settings.DAGWRIGHT_PROVIDERS = {}  # no endpoint configured: only simulated models are served
    with pytest.raises(ProviderError) as caught:
        provider_for(model)

    assert caught.value.retryable is False
    assert caught.value.error_class == "unknown_model"
    assert f"'{model}'" in str(caught.value)


@pytest.mark.parametrize(
    "simulation",
    [
        pytest.param({"seed": "abc"}, id="seed-not-a-number"),
        pytest.param({"latency": "gaussian:1"}, id="unknown-latency-kind"),
        pytest.param({"latency": "fixed:soon"}, id="latency-not-a-number"),
        pytest.param({"colour": "red"}, id="unknown-option"),
        pytest.param("fast", id="not-an-object"),
    ],
)
def test_bad_simulation_options_are_a_permanent_provider_error(simulation: object) -> None:
    with pytest.raises(ProviderError) as caught:
        provider_for("sim-fast", run_options={"simulation": simulation})

    assert caught.value.retryable is False
    assert caught.value.error_class == "bad_request"
