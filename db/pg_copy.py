"""PostgreSQL binary COPY: equal-length numpy columns straight into a table, NaN as NULL.

One vectorised numpy pass builds the payload (no Python object per value), which is what lets
a chunk of results or a mosaic set reach the server at COPY speed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from db.errors import StoreError

__all__ = ["binary_copy", "copy_into"]

_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, header extension length
_TRAILER = b"\xff\xff"
_INT4 = np.iinfo(np.int32)


def _wire_dtype(name: str, values: np.ndarray) -> str:
    if values.dtype.kind == "f":
        return ">f8"
    if values.dtype.kind in "iub":
        if values.size and (values.min() < _INT4.min or values.max() > _INT4.max):
            raise StoreError(
                f"Expected {name} values that fit a 32-bit integer but got {values.min()}..{values.max()}."
            )
        return ">i4"
    raise StoreError(f"Expected a numeric column {name} but got dtype {values.dtype}.")


def binary_copy(columns: Mapping[str, np.ndarray]) -> bytes:
    """Encode columns as one ``COPY ... (FORMAT BINARY)`` payload.

    Integer columns go as ``integer`` (checked to fit), float columns as ``double precision``
    where NaN is sent as NULL.

    Examples
    --------
    >>> len(binary_copy({"a": np.array([1, 2]), "b": np.array([0.5, np.nan])}))
    57
    """
    arrays = {name: np.asarray(values).reshape(-1) for name, values in columns.items()}
    m = len(next(iter(arrays.values())))
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i, (name, values) in enumerate(arrays.items()):
        if len(values) != m:
            raise StoreError(f"Expected {m} values in column {name} but got {len(values)}.")
        fields += [(f"length{i}", ">i4"), (f"value{i}", _wire_dtype(name, values))]
    records = np.empty(m, dtype=np.dtype(fields))
    records["count"] = len(arrays)
    nulls: list[tuple[int, np.ndarray]] = []
    for i, values in enumerate(arrays.values()):
        records[f"length{i}"] = records.dtype[f"value{i}"].itemsize
        records[f"value{i}"] = values
        if values.dtype.kind == "f" and np.isnan(values).any():
            nulls.append((i, np.isnan(values)))
    if not nulls:
        return _HEADER + records.tobytes() + _TRAILER
    keep = np.ones((m, records.dtype.itemsize), dtype=bool)
    for i, is_null in nulls:  # a NULL field is its length -1 and no value bytes
        records[f"length{i}"][is_null] = -1
        offset = records.dtype.fields[f"value{i}"][1]
        keep[is_null, offset : offset + 8] = False
    payload = records.view(np.uint8).reshape(m, records.dtype.itemsize)[keep]
    return _HEADER + payload.tobytes() + _TRAILER


def copy_into(connection: Connection, table: str, columns: Mapping[str, np.ndarray]) -> None:
    """COPY the columns into ``table`` inside the connection's transaction (PostgreSQL only).

    ``table`` and the column names are this package's own identifiers, never user input. A
    driver error is raised as SQLAlchemy's (``IntegrityError`` for a key violation), as any
    other statement on the connection would raise it.
    """
    payload = binary_copy(columns)
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    raw = connection.connection.driver_connection
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(payload)
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
