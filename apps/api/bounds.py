"""Bounds for every integer the API reads, stated in its OpenAPI document.

An integer past what a column holds is not a smaller problem than a wrong type: SQLite raises
``OverflowError`` past 64 bits when it is bound as a parameter, PostgreSQL refuses a value past its
column's type, and both were 500s. Each bound here fits the column the value is compared with or
stored in, on every database, so a request past it is a 422 with the parameter or the pointer.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from ninja import Field, Schema
from ninja.pagination import LimitOffsetPagination
from pydantic import BeforeValidator

MAX_INT64 = 2**63 - 1  # BigIntegerField, BigAutoField
MAX_INT32 = 2**31 - 1  # PositiveIntegerField: version numbers, a review's version
MAX_LIMIT = 500
MAX_OFFSET = MAX_INT32

Id = Annotated[int, Field(ge=1, le=MAX_INT64)]
Number = Annotated[int, Field(ge=1, le=MAX_INT32)]


def _iso_date(value: Any) -> Any:
    # The schema says format: date; pydantic would also read "0" as a Unix timestamp.
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("write a date as YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class Page(LimitOffsetPagination):
    """``limit`` and ``offset`` with a ceiling: a list never answers more than MAX_LIMIT items."""

    class Input(Schema):
        limit: int = Field(100, ge=1, le=MAX_LIMIT, description=f"At most {MAX_LIMIT} items per page.")
        offset: int = Field(0, ge=0, le=MAX_OFFSET)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_limit=MAX_LIMIT, **kwargs)
