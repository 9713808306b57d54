"""Prices per million tokens (input, output) in US dollars, and the cost of a call.

The price table lives in the database (``ModelPrice``, edited in the admin). ``PRICES`` is the
built-in default: the data migration seeds the table from it, and a model with no active row
falls back to it. Rows are read once per ``CACHE_SECONDS`` per process, so an edit applies to the
calls made a few seconds later without a query per call.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

log = logging.getLogger(__name__)

PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "sim-fast": (Decimal("0.15"), Decimal("0.60")),
    "sim-smart": (Decimal("2.50"), Decimal("10.00")),
    "sim-mini": (Decimal("0.05"), Decimal("0.20")),
    "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "gpt-4.1": (Decimal("2.00"), Decimal("8.00")),
    "gpt-4.1-mini": (Decimal("0.40"), Decimal("1.60")),
}
MILLION = Decimal(1_000_000)
QUANTUM = Decimal("0.00000001")
CACHE_SECONDS = 5.0

_table: dict[str, tuple[Decimal, Decimal]] = {}
_loaded_at: float | None = None
_unpriced_logged: set[str] = set()


def clear_price_cache() -> None:
    """Forget the prices read from the database (the next call reads them again)."""
    global _loaded_at
    _loaded_at = None


def _db_prices() -> dict[str, tuple[Decimal, Decimal]]:
    global _table, _loaded_at
    now = time.monotonic()
    if _loaded_at is None or now - _loaded_at > CACHE_SECONDS:
        from .models import ModelPrice  # the table is optional to this module's callers (and import order)

        rows = ModelPrice.objects.filter(active=True).values_list("model", "input_per_million", "output_per_million")
        _table, _loaded_at = {model: (price_in, price_out) for model, price_in, price_out in rows}, now
    return _table


def model_price(model: str) -> tuple[Decimal, Decimal] | None:
    """The model's (input, output) price per million tokens: its active row, else the built-in default."""
    return _db_prices().get(model) or PRICES.get(model)


def call_cost(model: str, tokens_in: int, tokens_out: int) -> Decimal:
    """Cost of one call, exact to 8 places. A model with no price at all costs nothing, and the
    first such call in a process logs a warning so the missing row gets noticed."""
    price = model_price(model)
    if price is None:
        if model not in _unpriced_logged:
            _unpriced_logged.add(model)
            log.warning("model %r has no price: its calls are costed at 0 (add it in the admin's model prices)", model)
        price = (Decimal(0), Decimal(0))
    price_in, price_out = price
    return ((price_in * tokens_in + price_out * tokens_out) / MILLION).quantize(QUANTUM)
