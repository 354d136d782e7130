"""The library's exceptions.

Every failure to describe an image surfaces as an :class:`ImageIntrospectError`.  Like
msgpack's exceptions they also subclass :class:`ValueError`, so callers that already catch
``ValueError`` around image handling keep working.
"""

from __future__ import annotations


class ImageIntrospectError(ValueError):
    """Base class: the input could not be described."""


class InvalidImage(ImageIntrospectError):
    """The image is too broken to describe at all (for example a truncated header)."""


class FormatMismatch(ImageIntrospectError):
    """The content is not the format the caller said it was (``expected_format``)."""

    def __init__(self, expected: str, detected: str) -> None:
        super().__init__(f"expected a {expected} image, but the content is {detected}")
        self.expected = expected
        self.detected = detected


class InternalParserError(InvalidImage):
    """A defect in this library met an input it did not foresee.

    Raised instead of leaking a foreign exception type to callers; the original exception is
    chained as ``__cause__``.  Tests treat any occurrence as a bug.
    """
