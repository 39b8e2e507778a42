"""The error type of the results store."""

__all__ = ["StoreError"]


class StoreError(ValueError):
    """A problem with the results store that the user can fix.

    The message is one sentence that says what to do, for example
    ``"The database at sqlite:///focus.db is at revision 0001, behind 0002; run `focus db upgrade`."``

    Examples
    --------
    >>> raise StoreError("Run `focus db upgrade` to create the schema.")
    Traceback (most recent call last):
    ...
    db.errors.StoreError: Run `focus db upgrade` to create the schema.
    """
