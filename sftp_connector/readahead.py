"""Read ahead: the next items of an iterator are made by a thread while the caller works on this one.

Imports parse and process the next batch of a file while the current one merges; exports read
the next page of profiles while the current one is rendered. polars and the database drivers
release the GIL while they work, so the two overlap on two cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


def read_ahead(items: Iterator[T], *, depth: int = 1, name: str = "read-ahead") -> Iterator[T]:
    """Given an iterator, yield its items, making up to `depth` of the next ones in a thread meanwhile.

    An error of the iterator is raised here, where its item would have been. Only the thread
    touches the iterator until it is exhausted; when the caller stops early, the thread stops
    after the item in hand and closes the iterator (a generator's `finally` runs there).
    """
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def make() -> None:
        try:
            for item in items:
                if not _put(ready, item, stop):
                    break
        except BaseException as exc:  # handed to the caller, raised there
            _put(ready, exc, stop)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            _put(ready, _DONE, stop)

    thread = threading.Thread(target=make, name=name, daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _put(ready: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Put the item when there is room; return False (dropping it) once the caller has stopped."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
