"""A wall-clock deadline for a whole HTTP exchange made with requests: headers and body.

requests' timeout bounds each wait on the socket, and a wait ends with every byte: a server that
trickles its answer a byte at a time can hold a download (and the request thread behind it) for
as long as it likes. Within `TransferDeadline(deadline)`, the connection that this thread's
request takes from the pool is shut down when the deadline passes, which ends any read blocked on
it; the caller then reports the timeout. Only sessions prepared with `watch_connections` report
their connections.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any

import requests
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()  # .deadline: the TransferDeadline of this thread, if any


class TransferDeadline:
    """A context manager that cuts this thread's HTTP connection at `deadline` (time.monotonic)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._connection: Any = None
        self._finished = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._expire)
        self._timer.daemon = True

    @property
    def passed(self) -> bool:
        """True once the deadline is over."""
        return time.monotonic() >= self.deadline

    def __enter__(self) -> TransferDeadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(
        self, error_type: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        with self._lock:
            self._finished = True
            self._connection = None
        self._timer.cancel()
        _current.deadline = None

    def attach(self, connection: Any) -> None:
        """Watch `connection`, the one a request of this thread is about to use."""
        with self._lock:
            if not self._finished:
                self._connection = connection

    def _expire(self) -> None:
        with self._lock:
            if self._finished or self._connection is None:
                return
            sock = getattr(self._connection, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):  # closed already: nothing left to wake
                    sock.shutdown(socket.SHUT_RDWR)


class _WatchedPool:
    """A connection pool (mixed in first) that hands the connections it gives out to the
    TransferDeadline of the requesting thread."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.attach(connection)
        return connection


class _WatchedHTTPConnectionPool(_WatchedPool, HTTPConnectionPool):
    pass


class _WatchedHTTPSConnectionPool(_WatchedPool, HTTPSConnectionPool):
    pass


def watch_connections(session: requests.Session) -> None:
    """Make the session's adapters use pools whose connections TransferDeadline can cut."""
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None:
            manager.pool_classes_by_scheme = {
                "http": _WatchedHTTPConnectionPool,
                "https": _WatchedHTTPSConnectionPool,
            }
