"""Remote files and paths, as the transport and the stages that decide about files see them: pure, no
server. `RemoteFile` is a listed file; `resolve` puts a goal directory under sftp.home; `local_name` turns
a remote path into one safe local file name; partial names are those of uploads under way."""

from __future__ import annotations

import hashlib
import posixpath
import re
import zlib
from dataclasses import dataclass

_PARTIAL = re.compile(r"\.(.+)\.[0-9a-f]{8}\.partial", re.DOTALL)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A regular file on the server: absolute POSIX path, size in bytes, server mtime."""

    path: str
    size: int
    mtime: int
    refused: str | None = None
    """Why the connector will not read this file (e.g. a control character in its name), else None."""

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


def resolve(home: str, directory: str) -> str:
    """Given sftp.home and a goal directory, return the remote path (relative → under home).

    Contract: pure; an absolute directory is used as is; the result is normalised.
    """
    path = posixpath.normpath(posixpath.join(home, directory))
    return "/" + path.lstrip("/") if path.startswith("//") else path


HOME_HINT = " (to use a folder elsewhere, set sftp.home to a folder that holds it)"


def below_login(home: str) -> str | None:
    """Given sftp.home, return its part below the login directory ('' for the login directory itself), or
    None if it is absolute. Contract: pure; `~`, `~/x` and `x` lie below the login directory."""
    if home.startswith("/"):
        return None
    if home == "~" or home.startswith("~/"):
        home = home[1:].lstrip("/")
    home = posixpath.normpath(home) if home else ""
    return "" if home == "." else home


def local_name(remote_path: str) -> str:
    """Given a remote path, return a safe, deterministic single local path component.

    Contract: pure; never '.', '..', '/', NUL or control characters; at most 137 characters;
    distinct remote paths give distinct names (a hash of the full path leads the name).
    """
    digest = hashlib.sha256(remote_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.basename(remote_path)) or "file"
    if len(name) > 120:  # keep the head and the suffixes (.csv.gz.gpg)
        name = name[:60] + "_" + name[-59:]
    return f"{digest}_{name}"


def partial_name(name: str) -> str:
    """Given a remote file name, return the deterministic name it is first uploaded under."""
    return f".{name}.{zlib.crc32(name.encode('utf-8', 'surrogateescape')):08x}.partial"


def is_partial_name(name: str) -> bool:
    """Given a remote file name, return True if partial_name() made it (the checksum must match)."""
    match = _PARTIAL.fullmatch(name)
    return match is not None and partial_name(match.group(1)) == name
