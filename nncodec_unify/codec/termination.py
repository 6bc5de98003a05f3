"""Stopping on SIGTERM or SIGHUP without leaving output behind.

The command line's handler raises :class:`Terminated` wherever the main thread is, so that
every output in progress is cleaned up as for Ctrl-C. Python drops an exception raised while a
finalizer runs (a ``__del__`` or a weakref callback only prints "Exception ignored"), so the
handler also records the signal here: :func:`atomic_output` checks the record before it
commits a file, and long loops check it between units. A terminated program therefore never
completes an output, even when the exception itself was lost.
"""

from __future__ import annotations

_received: int | None = None


class Terminated(BaseException):
    """The process received ``signum`` (SIGTERM or SIGHUP) and is stopping."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def on_signal(signum: int, frame) -> None:
    """A ``signal.signal`` handler: record ``signum``, then raise :class:`Terminated`."""
    global _received
    _received = signum
    raise Terminated(signum)


def check() -> None:
    """Raise :class:`Terminated` if a termination signal was received since :func:`reset`."""
    if _received is not None:
        raise Terminated(_received)


def reset() -> None:
    """Forget a received signal (a new command starts)."""
    global _received
    _received = None
