"""Column types that behave the same on PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["JSONType", "UTCDateTime", "utcnow", "optional_float"]

#: JSON on SQLite, JSONB on PostgreSQL. Only for configuration and parameters, never per-mosaic data.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    """Return the current time as a timezone-aware UTC datetime.

    Examples
    --------
    >>> utcnow().tzinfo is dt.timezone.utc
    True
    """
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware timestamp, stored in UTC on every database.

    PostgreSQL stores ``TIMESTAMP WITH TIME ZONE``; SQLite has no time zones, so the value is
    converted to UTC and stored without an offset, then read back as UTC. Naive datetimes are
    refused because their time zone is a guess.

    Examples
    --------
    >>> UTCDateTime().process_bind_param(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), None)
    datetime.datetime(2024, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect | None) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise ValueError(f"Expected a datetime but got {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"Expected a timezone-aware datetime but got the naive {value!r}")
        value = value.astimezone(dt.timezone.utc)
        if dialect is not None and dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def optional_float(value: float | None) -> float | None:
    """A float for a nullable ``DOUBLE`` column: ``None`` and NaN become ``None`` (SQL NULL).

    Examples
    --------
    >>> optional_float(float("nan")) is None, optional_float(1)
    (True, 1.0)
    """
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
