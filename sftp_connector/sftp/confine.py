"""What the connector accepts from an SFTP server: plain file names, regular files, paths inside `sftp.home`.

The server and the partner who writes to it are only partly trusted (see SECURITY.md). So:

- A directory is read entry by entry with the names as the server sent them (`read_directory`):
  paramiko's `listdir_attr` fails on a whole directory when one name is not UTF-8.
- A name that cannot be a file name (empty, `.`, `..`, holding `/` or NUL) is a server
  fault and is skipped; a name that is not UTF-8 or holds control or bidi-override
  characters is refused (`name_problem`): the file is listed, and reading it fails with
  the reason, so the operator sees it.
- Symbolic links are never followed: they are not listed as files, and a directory the
  connector lists, or creates folders in, must lie inside the real path of `sftp.home`
  once the server resolves its links (`within`).
"""

from __future__ import annotations

import logging
import posixpath
import re
import stat
from contextlib import suppress

import paramiko
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR, SFTPError

logger = logging.getLogger(__name__)

# C0 and C1 controls, DEL, and the bidi overrides that make a name display as another.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def within(path: str, root: str) -> bool:
    """Given two absolute POSIX paths, return True if path is root or lies below it (after normalising)."""
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def impossible(raw: bytes) -> bool:
    """Given a directory entry's name as the server sent it, return True if no file can have it."""
    return raw in (b"", b".", b"..") or b"/" in raw or b"\x00" in raw


def name_problem(raw: bytes) -> tuple[str, str | None]:
    """Given a directory entry's name as sent, return it as text and why it is refused (None if it is fine).

    A name that is not UTF-8 comes back with `\\x..` escapes: it can be shown, never opened.
    """
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), "its name is not valid UTF-8"
    bad = _UNSAFE.search(name)
    if bad:
        shown = bad.group().encode("unicode_escape").decode("ascii")
        return name, f"its name holds the control character {shown}"
    return name, None


def classify(directory: str, raw: bytes, mode: int) -> tuple[str, str | None] | None:
    """Given a directory and one of its entries (name as sent, mode), return the file's path and why it is
    refused (None if it is not), or None if the entry is not a file to list: a folder, a link or a name no
    file can have (the last two logged)."""
    name, refused = name_problem(raw)
    if impossible(raw):
        logger.warning("skipped %r in %s: the server sent a name no file can have", name, directory)
        return None
    if stat.S_ISLNK(mode):
        logger.warning("skipped %s: it is a symbolic link, and links are never followed",
                       posixpath.join(directory, name))
        return None
    return (posixpath.join(directory, name), refused) if stat.S_ISREG(mode) else None


def read_directory(sftp: paramiko.SFTPClient, path: str) -> list[tuple[bytes, paramiko.SFTPAttributes]]:
    """Given a directory, return its entries but `.` and `..` as (name as sent, attributes).

    The attributes are the server's for the entry itself (OpenSSH: lstat), so a link is a link.
    Raise what paramiko raises (OSError, SSHException, EOFError) if listing fails.
    """
    kind, msg = sftp._request(CMD_OPENDIR, sftp._adjust_cwd(path))
    if kind != CMD_HANDLE:
        raise SFTPError("Expected handle")
    handle = msg.get_binary()
    try:
        entries = _read_entries(sftp, handle)
    except BaseException:
        with suppress(Exception):
            sftp._request(CMD_CLOSE, handle)
        raise
    sftp._request(CMD_CLOSE, handle)
    return entries


def _read_entries(sftp: paramiko.SFTPClient, handle: bytes) -> list[tuple[bytes, paramiko.SFTPAttributes]]:
    entries: list[tuple[bytes, paramiko.SFTPAttributes]] = []
    while True:
        try:
            kind, msg = sftp._request(CMD_READDIR, handle)
        except EOFError:
            return entries
        if kind != CMD_NAME:
            raise SFTPError("Expected name response")
        for _ in range(msg.get_int()):
            raw = msg.get_string()
            msg.get_string()  # the `ls -l` line: not needed, and not always UTF-8 either
            attrs = paramiko.SFTPAttributes._from_msg(msg)
            if raw not in (b".", b".."):
                entries.append((raw, attrs))
