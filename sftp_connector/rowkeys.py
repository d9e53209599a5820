"""Keys of a file's rows for exactly-once imports: each row's occurrence number among rows with its
identifier value, and a compact prefilter of the identifier values a file has added so far.

Both live across a file's batches in bounded memory: sorted hash series searched by binary
search, never a hash table of everything seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

HASH_SEED = 20_261_122


def short_hash(values: pl.Series) -> pl.Series:
    """4-byte hashes of values (for a prefilter: a collision only costs a lookup that finds nothing)."""
    return (values.hash(seed=HASH_SEED) & 0xFFFFFFFF).cast(pl.UInt32)


def merge_sorted(ordered: pl.Series, more: pl.Series, *, distinct: bool = False) -> pl.Series:
    """Given a sorted series and more values, return them all sorted (without repeats if distinct).

    A merge of two sorted runs: no sort of the whole, no hash table; these series grow with
    the file, so their peak memory is what this saves.
    """
    more = more.cast(ordered.dtype).sort()
    both = ordered.to_frame("v").merge_sorted(more.to_frame("v"), key="v").to_series().alias(ordered.name)
    return both.filter(both.ne_missing(both.shift(1))) if distinct else both


def among(hashes: pl.Series, sorted_hashes: pl.Series) -> pl.Series:
    """Which hashes are in the sorted series: a binary search, no hash table of the whole series."""
    if sorted_hashes.is_empty():
        return pl.Series([False] * hashes.len(), dtype=pl.Boolean)
    at = sorted_hashes.search_sorted(hashes).clip(0, sorted_hashes.len() - 1)
    return (sorted_hashes.gather(at) == hashes).fill_null(False)


@dataclass(slots=True)
class Occurrences:
    """How often each identifier value was seen in the file so far, in bounded memory.

    Values are tracked by a 64-bit hash in a sorted series (8 bytes a distinct value);
    counts above one live in a small dict. A hash collision (odds about 1 in 10^6 for 5
    million distinct values) only renumbers a row consistently, it never merges two rows.
    """

    seen: pl.Series = field(default_factory=lambda: pl.Series("h", [], dtype=pl.UInt64))
    more: dict[int, int] = field(default_factory=dict)

    def number(self, idents: pl.Series) -> pl.Series:
        """Given this batch's identifier values, return each row's occurrence number in the file (1-based)."""
        hashes = idents.hash(seed=HASH_SEED).alias("h")
        # Most files name each customer once: then every row is its value's first in the batch.
        within = pl.col("h").cum_count().over("h") if hashes.n_unique() < hashes.len() else pl.lit(1, pl.UInt32)
        frame = hashes.to_frame().with_columns(within=within)
        present = among(frame.get_column("h"), self.seen)
        frame = frame.with_columns(present=present)
        if present.any():
            prior = [self.more.get(h, 1) if hit else 0 for h, hit in zip(
                frame.get_column("h").to_list(), present.to_list(), strict=True)]
            frame = frame.with_columns(n=pl.col("within") + pl.Series(prior))
        else:
            frame = frame.with_columns(n=pl.col("within"))
        for h, n in frame.filter(pl.col("n") > 1).select("h", "n").iter_rows():
            self.more[h] = max(self.more.get(h, 0), n)
        self.seen = merge_sorted(self.seen, frame.filter(~pl.col("present")).get_column("h").unique())
        return frame.get_column("n")
