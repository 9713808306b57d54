"""The cost of a call, exact in Decimal, from the price table (``ModelPrice``, seeded from ``PRICES``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.providers import pricing
from apps.providers.models import ModelPrice
from apps.providers.pricing import PRICES, call_cost

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_prices():
    """Each test reads the table it sets up, not the previous test's (prices are cached per process)."""
    pricing.clear_price_cache()
    yield
    pricing.clear_price_cache()


def test_a_million_tokens_each_way_costs_the_two_prices() -> None:
    price_in, price_out = PRICES["sim-fast"]

    cost = call_cost("sim-fast", 1_000_000, 1_000_000)

    assert cost == price_in + price_out == Decimal("0.75")
    assert isinstance(cost, Decimal)


@pytest.mark.parametrize("model", sorted(PRICES))
def test_every_priced_model_charges_per_million_tokens(model: str) -> None:
    price_in, price_out = PRICES[model]

    assert call_cost(model, 1_000_000, 0) == price_in
    assert call_cost(model, 0, 1_000_000) == price_out
    assert call_cost(model, 2_000_000, 3_000_000) == 2 * price_in + 3 * price_out
    assert call_cost(model, 0, 0) == 0


def test_small_calls_are_exact_to_eight_places() -> None:
    # 123 * 2.50 + 45 * 10.00 = 757.5 micro-dollars
    assert call_cost("sim-smart", 123, 45) == Decimal("0.0007575")
    assert call_cost("sim-mini", 1, 0) == Decimal("0.00000005")
    assert call_cost("sim-mini", 1, 0).as_tuple().exponent == -8


def test_a_model_missing_from_the_table_costs_nothing() -> None:
    assert call_cost("someone-elses-model", 1_000_000, 1_000_000) == Decimal(0)


def test_the_migration_seeds_the_table_with_the_built_in_prices() -> None:
    seeded = {row.model: (row.input_per_million, row.output_per_million) for row in ModelPrice.objects.all()}

    assert seeded == PRICES
    assert ModelPrice.objects.get(model="sim-fast").provider == "simulated"
    assert ModelPrice.objects.get(model="gpt-4o").provider == "openai"
    assert {row.currency for row in ModelPrice.objects.all()} == {"USD"}


def test_an_admin_edit_changes_the_cost_of_the_next_call(client, admin) -> None:
    row = ModelPrice.objects.get(model="sim-fast")
    assert call_cost("sim-fast", 1_000_000, 1_000_000) == Decimal("0.75")
    client.force_login(admin)
    form = {"provider": "simulated", "model": "sim-fast", "input_per_million": "1.25", "output_per_million": "3.333333", "active": "on", "notes": ""}

    response = client.post(f"/admin/providers/modelprice/{row.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    pricing.clear_price_cache()  # what CACHE_SECONDS does on its own a few seconds later
    assert call_cost("sim-fast", 1_000_000, 1_000_000) == Decimal("4.583333")
    assert call_cost("sim-fast", 7, 3) == Decimal("0.00001875")  # (7 * 1.25 + 3 * 3.333333) / 1e6 = 18.749999e-6


def test_prices_are_read_once_per_cache_window(django_assert_num_queries) -> None:
    call_cost("sim-fast", 1, 1)
    ModelPrice.objects.filter(model="sim-fast").update(input_per_million=Decimal(100))

    with django_assert_num_queries(0):
        assert call_cost("sim-fast", 1_000_000, 0) == Decimal("0.15")  # still the cached price


def test_a_model_added_in_the_admin_is_priced(client, admin) -> None:
    client.force_login(admin)
    form = {"provider": "local", "model": "llama3.1:8b", "input_per_million": "0.01", "output_per_million": "0.02", "active": "on", "notes": "self-hosted"}

    response = client.post("/admin/providers/modelprice/add/", form)

    assert response.status_code == 302
    assert call_cost("llama3.1:8b", 1_000_000, 2_000_000) == Decimal("0.05")


def test_an_inactive_row_falls_back_to_the_built_in_default() -> None:
    ModelPrice.objects.filter(model="sim-smart").update(active=False, input_per_million=Decimal(99))

    assert call_cost("sim-smart", 1_000_000, 0) == Decimal("2.50")


def test_an_unpriced_model_is_logged_once(caplog) -> None:
    pricing._unpriced_logged.discard("nobody-prices-me")
    with caplog.at_level("WARNING", logger="apps.providers.pricing"):
        call_cost("nobody-prices-me", 10, 10)
        call_cost("nobody-prices-me", 10, 10)

    warnings = [r.getMessage() for r in caplog.records if "nobody-prices-me" in r.getMessage()]
    assert len(warnings) == 1
    assert "has no price" in warnings[0]
