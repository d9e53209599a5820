"""Select a goal's files from directory listings and decide which need downloading (no I/O).

Patterns are matched against the whole remote file name. A root file's wildcard value
(what `*` or the regex's first group matched) is carried so that linked files can be paired.
"""

from __future__ import annotations

import fnmatch
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sftp_connector.config import models
from sftp_connector.errors import InputError
from sftp_connector.paths import RemoteFile

# SFTP mtimes have one-second resolution: a file recorded within this of its mtime may
# still change without its size or mtime showing it, so it is checked by content next time.
MTIME_SAFETY_S = 2


class Imported(Protocol):
    """What change detection needs of a file's last import record (the store's keeps more)."""

    @property
    def size(self) -> int: ...
    @property
    def mtime(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def config_digest(self) -> str: ...
    @property
    def listed_at(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Match:
    """A remote file that matched a file entry, with the value its wildcard matched."""

    remote: RemoteFile
    wildcard: str | None


def compile_pattern(entry: models.FileEntry) -> re.Pattern[str]:
    """Given a file entry, return its pattern as a regex matching a whole file name."""
    if entry.regex is not None:
        return re.compile(entry.regex)
    assert entry.pattern is not None
    return re.compile(_glob_with_groups(entry.pattern), re.DOTALL)  # a glob's * matches any character, as fnmatch


def _glob_with_groups(pattern: str) -> str:
    """Translate a glob to a regex in which each `*` and `?` is a capturing group."""
    parts: list[str] = []
    for token in re.split(r"(\*|\?|\[[^\]]*\])", pattern):
        if token == "*":
            parts.append("(.*)")
        elif token == "?":
            parts.append("(.)")
        elif token.startswith("[") and token.endswith("]") and len(token) > 2:
            parts.append(fnmatch.translate(token).removeprefix("(?s:").removesuffix(")\\Z"))
        else:
            parts.append(re.escape(token))
    return "".join(parts)


def match(entry: models.FileEntry, listing: Sequence[RemoteFile]) -> list[Match]:
    """Given a file entry and a directory listing, return the matching files in name order."""
    regex = compile_pattern(entry)
    found = []
    for remote in sorted(listing, key=lambda r: r.name):
        hit = regex.fullmatch(remote.name)
        if hit:
            found.append(Match(remote, "".join(g or "" for g in hit.groups()) if hit.groups() else None))
    return found


def pair(entry: models.FileEntry, matches: Sequence[Match], root: Match) -> Match:
    """Given a linked file entry, its matching files and the root file, return the root's linked file:
    the one whose wildcard value is the root's (`customers_244.csv` ↔ `orders_244.csv`).

    Raise InputError, naming both files, if there is none or (without a wildcard) more than one.
    """
    what = f"{entry.pattern or entry.regex} in {entry.directory}"
    if root.wildcard is not None:
        found = [m for m in matches if m.wildcard == root.wildcard]
        if not found:
            raise InputError(f"linked file {entry.name} is missing for {root.remote.name}: no file matching "
                             f"{what} with the wildcard value {root.wildcard!r}")
        return found[0]
    if len(matches) != 1:
        raise InputError(f"linked file {entry.name} for {root.remote.name}: expected one file matching {what}, "
                         f"found {len(matches)}" + (f" ({', '.join(m.remote.name for m in matches)})"
                                                    if matches else ""))
    return matches[0]


def done_marker_name(marker: str, name: str) -> str:
    """Given the goal's done_marker and a file name, return the marker file's name.

    A marker with `{name}` or `{stem}` is a template; otherwise it is a suffix (".done").
    Raise InputError if the template has another placeholder or the marker would not be a
    file beside the one it marks (a `/`, `.` or `..`): a marker never points elsewhere.
    """
    if "{" in marker:
        _check_template(marker)
        found = marker.format(name=name, stem=name.rsplit(".", 1)[0])
    else:
        found = name + marker
    if "/" in found or "\x00" in found or found in ("", ".", ".."):
        raise InputError(f"done_marker {marker!r} must name a file in the same directory as the file it marks "
                         f"(for {name!r} it gives {found!r})")
    return found


def _check_template(marker: str) -> None:
    """Given a done_marker template, raise InputError unless its only placeholders are {name} and {stem}."""
    try:
        fields = [(field, spec, conversion) for _, field, spec, conversion in string.Formatter().parse(marker)
                  if field is not None]
    except ValueError as exc:
        raise InputError(f"done_marker {marker!r}: bad template ({exc}); use {{name}} or {{stem}}") from exc
    for field, spec, conversion in fields:
        if field not in ("name", "stem") or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise InputError(f"done_marker {marker!r}: unknown placeholder {shown}; use {{name}} or {{stem}}")


def is_marker(marker: str | None, name: str, names: set[str]) -> bool:
    """Given the done_marker and a listed name, return True if it is the marker of another listed file."""
    if not marker:
        return False
    return any(done_marker_name(marker, other) == name for other in names if other != name)


def unchanged_by_listing(remote: RemoteFile, record: Imported | None, digest: str, force: bool) -> bool:
    """Given a listed file and its last import record, return True if it can be skipped without download.

    Size, mtime and configuration must be unchanged, and the mtime must have been at least
    MTIME_SAFETY_S older than the listing that recorded it.
    """
    if force or record is None:
        return False
    return (
        record.size == remote.size
        and record.mtime == remote.mtime
        and record.config_digest == digest
        and record.listed_at - record.mtime >= MTIME_SAFETY_S
    )


def unchanged_by_content(sha256: str, record: Imported | None, digest: str, force: bool) -> bool:
    """Given a downloaded file's SHA-256 and its last import record, return True if it can be skipped."""
    return not force and record is not None and record.sha256 == sha256 and record.config_digest == digest


def stable(first: Sequence[RemoteFile], second: Sequence[RemoteFile]) -> set[str]:
    """Given two listings taken some time apart, return the paths whose size and mtime did not change."""
    before = {(r.path, r.size, r.mtime) for r in first}
    return {r.path for r in second if (r.path, r.size, r.mtime) in before}
