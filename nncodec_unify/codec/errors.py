"""The exceptions nncodec_unify raises.

Every malformed stream ends in :class:`BitstreamError` (a :class:`ValueError`), which names
the syntax element, the byte offset and the offending value, so a one-line message tells a
user or a conformance tester what was wrong and where. Problems with the *input* of the
encoder end in :class:`EncodeError`.
"""

from __future__ import annotations

import errno


class NncodecError(Exception):
    """Base class of every error this package raises on purpose."""


class BitstreamError(NncodecError, ValueError):
    """A stream that does not conform to spec/bitstream.md.

    ``element`` is the syntax element's name as the spec writes it, ``offset`` the byte offset
    in the stream at which the element starts (or ``None`` when not known), ``source`` the
    stream file's path when a function given one raised it (the message then starts with it).
    """

    def __init__(self, message: str, *, element: str | None = None, offset: int | None = None,
                 source: str | None = None):
        self.detail = message
        self.element = element
        self.offset = offset
        self.source = source
        where = []
        if element is not None:
            where.append(element)
        if offset is not None:
            where.append(f"at byte {offset}")
        text = f"{' '.join(where)}: {message}" if where else message
        super().__init__(f"{source}: {text}" if source is not None else text)

    def in_file(self, source) -> BitstreamError:
        """The same error (type, element, offset), naming the stream file ``source``."""
        return type(self)(self.detail, element=self.element, offset=self.offset, source=str(source))

    def __reduce__(self):  # element, offset and source survive the trip from a worker process
        return _rebuild, (type(self), self.detail, self.element, self.offset, self.source)


def _rebuild(kind: type, detail: str, element: str | None, offset: int | None,
             source: str | None = None) -> BitstreamError:
    return kind(detail, element=element, offset=offset, source=source)


class TruncatedError(BitstreamError):
    """The stream ends inside a structure."""


class ChecksumError(BitstreamError):
    """A unit's CRC-32 does not match its header and payload."""


class UnsupportedVersionError(BitstreamError):
    """The stream's major version is not one this decoder implements."""


class LimitExceededError(BitstreamError):
    """A declared size exceeds a decoder limit (see :class:`nncodec_unify.Limits`)."""


class EncodeError(NncodecError, ValueError):
    """The encoder cannot represent its input with the options it was given."""


class OutputExistsError(NncodecError, FileExistsError):
    """An output file or folder exists and overwriting it was not asked for (``overwrite=True``
    in the library, ``-f`` on the command line). ``filename`` is the output's path and
    ``detail`` says what is in the way."""

    def __init__(self, path, detail: str = "already exists") -> None:
        super().__init__(errno.EEXIST, detail, str(path))
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.filename}: {self.detail} (pass overwrite=True to replace it)"

    def __reduce__(self):  # path and detail survive the trip from a worker process (and copy.copy)
        return type(self), (self.filename, self.detail)
