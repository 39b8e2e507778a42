"""The project's error type for mistakes a user can make."""

__all__ = ["FocusError"]


class FocusError(ValueError):
    """A mistake a user can fix, with a message of one sentence that says how.

    It subclasses :class:`ValueError`, so callers that catch ``ValueError`` keep working.

    Examples
    --------
    >>> raise FocusError("The folder 'data/cats' does not exist: pass an ImageFolder directory.")
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The folder 'data/cats' does not exist: pass an ImageFolder directory.
    """
