"""The project's error type for mistakes a user can make."""

__all__ = ["FocusError", "first_line"]


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


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when it has none): to quote it in one sentence.

    Examples
    --------
    >>> first_line(RuntimeError("size mismatch\\n  details..."))
    'size mismatch'
    >>> first_line(KeyError())
    'KeyError'
    """
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
