"""The binary COPY encoder against PostgreSQL itself: values, NULLs and refused columns."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from sqlalchemy.engine import make_url

import db
from db.pg_copy import binary_copy


def test_binary_copy_round_trips_through_postgresql(pg_url):
    columns = {
        "a": np.array([1, -2, 2**31 - 1], dtype=np.int64),
        "b": np.array([0.5, np.nan, -1e300]),
        "c": np.array([np.nan, np.nan, 3.0]),
        "d": np.array([True, False, True]),
    }
    conninfo = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as connection:
        connection.execute("CREATE TEMP TABLE t (a integer, b double precision, c double precision, d integer)")
        with connection.cursor().copy("COPY t (a, b, c, d) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(binary_copy(columns))
        rows = connection.execute("SELECT a, b, c, d FROM t ORDER BY a").fetchall()
    assert rows == [(-2, None, None, 0), (1, 0.5, None, 1), (2**31 - 1, -1e300, 3.0, 1)]


def test_binary_copy_refuses_what_does_not_fit():
    with pytest.raises(db.StoreError, match="fit a 32-bit integer"):
        binary_copy({"a": np.array([2**31])})
    with pytest.raises(db.StoreError, match="numeric column"):
        binary_copy({"a": np.array(["x"])})
    with pytest.raises(db.StoreError, match="Expected 2 values in column b"):
        binary_copy({"a": np.array([1, 2]), "b": np.array([1.0])})
