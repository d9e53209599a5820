"""read_ahead: same items in order, errors where they happened, an early stop closes the source."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from sftp_connector.readahead import read_ahead


def test_yields_every_item_in_order_made_by_another_thread() -> None:
    makers: set[str] = set()

    def items() -> Iterator[int]:
        for n in range(50):
            makers.add(threading.current_thread().name)
            yield n

    assert list(read_ahead(items(), depth=3, name="maker")) == list(range(50))
    assert makers == {"maker"}


def test_an_error_is_raised_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad batch")

    seen = []
    with pytest.raises(ValueError, match="bad batch"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_stopping_early_stops_the_thread_and_runs_the_sources_cleanup() -> None:
    made, cleaned = [], threading.Event()

    def items() -> Iterator[int]:
        try:
            for n in range(1_000_000):
                made.append(n)
                yield n
        finally:
            cleaned.set()

    for item in read_ahead(items(), depth=2):
        if item == 3:
            break
    assert cleaned.is_set()
    assert len(made) <= 3 + 1 + 2 + 1  # what was taken, the one in hand, the queue, one more in flight
    assert not any(t.name == "read-ahead" for t in threading.enumerate())


def test_an_empty_source_yields_nothing() -> None:
    assert list(read_ahead(iter([]))) == []
