"""The SFTP transport over paramiko: the only package that talks to the server.

`connect(config)` logs in and returns a `Session` whose methods are the transport's
contract. Host keys are always verified (known_hosts or a SHA256 pin), never added.
Paramiko and socket errors are translated at this boundary: network faults become
`TransportError(transient=True)`, retried with exponential backoff on a fresh connection;
refusals (login, permission denied, no such file) a non-transient `TransportError`; an
unknown or changed host key a `HostKeyError`, never retried. Remote names pass through
`local_name()` before they touch a local path.

`sftp.home` is the login directory by default (`~`); `~/…` and relative homes lie below it, and
the session asks the server once where that is, so every remote path it uses is absolute.
Every operation stays inside `sftp.home`: a path that leaves it after
`..` is refused, and so is a directory that leads out of it through a symbolic link on the
server. Links are never followed: they are not listed, and a file that became one after it
was listed is not read. Names the connector will not read are still listed, with the reason
in `RemoteFile.refused`, so that the file fails visibly (`confine` holds these rules).

This module holds the Session, its operations and the retry loop; `login` opens the
connection (host keys, authentication, proxy_jump) and translates paramiko's errors.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import paramiko

from sftp_connector import errors
from sftp_connector.config import models
from sftp_connector.paths import (  # noqa: F401 - the transport's path contract, here as before
    HOME_HINT,
    RemoteFile,
    below_login,
    is_partial_name,
    local_name,
    partial_name,
    resolve,
)
from sftp_connector.sftp import confine, login

logger = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF_S = 1.0
"""First retry delay in seconds; it doubles with each attempt, up to BACKOFF_MAX_S."""
BACKOFF_MAX_S = 30.0
CHUNK = 32768
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Local write errors that mean the disk (or the process's file size limit) is full."""
STALE_PARTIAL_S = 3600.0
"""A partial upload unchanged this long is a killed process's leftover (a live one grows or times out)."""
def known_hosts_problem(path: Path) -> str | None:
    """Given a known_hosts file, return why it cannot be used (which line is wrong, and the fix), or None."""
    try:
        login.load_known_hosts(path)
    except errors.HostKeyError as exc:
        return str(exc).removeprefix("known_hosts ")
    return None


def known_host_fingerprints(path: Path | None, host: str, port: int) -> list[str]:
    """Given a known_hosts file and a server, return the keys it trusts for that server as `type SHA256:…`.
    Raise HostKeyError if the file cannot be read."""
    keys = login.load_known_hosts(path)
    if keys is None:
        return []
    name = host if port == 22 else f"[{host}]:{port}"
    found = keys.lookup(name) or {}
    return [f"{kind} {found[kind].fingerprint}" for kind in sorted(found)]


def connect(config: models.Sftp) -> Session:
    """Given the sftp: config, return a logged-in Session. Raise HostKeyError if the host key
    is unknown or changed, TransportError if login is refused or the server stays unreachable.

    Contract: transient network errors are retried config.retries times with backoff.
    """
    where = f"connect to {config.host}:{config.port}"
    return Session(config, _retrying(config.retries, where, lambda: login.open_link(config)))


class Session:
    """A logged-in SFTP session (a context manager); reconnects after a transient fault."""

    def __init__(self, config: models.Sftp, link: login.Link) -> None:
        self.config = config
        self._link: login.Link | None = link
        self._home: str | None = None
        self._real_home: str | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def home(self) -> str:
        """sftp.home as an absolute path on this server (the login directory is asked for once)."""
        if self._home is None:
            below = below_login(self.config.home)
            if below is None:
                self._home = posixpath.normpath(self.config.home)
            else:
                login_dir = self._run("find the login directory", ".", lambda sftp: sftp.normalize("."))
                self._home = resolve(login_dir, below)
        return self._home

    def where(self, directory: str, action: str) -> str:
        """Given a goal's directory and what is to be done there ("list"), return its absolute path on the
        server. Raise TransportError, naming the action, if it leaves sftp.home."""
        return self._abs(directory, action)

    def list(self, directory: str) -> list[RemoteFile]:
        """Given a directory, return its regular files sorted by name. Raise TransportError
        naming it if it is missing, unreadable, or leads out of sftp.home through a link.

        Contract: no dirs; links are skipped, never followed; a file whose name the connector
        will not read is listed with `refused` set.
        """
        path = self._abs(directory, "list")

        def listing(sftp: paramiko.SFTPClient) -> list[tuple[bytes, paramiko.SFTPAttributes]]:
            self._check_real_path(sftp, path, "list")
            return confine.read_directory(sftp, path)

        try:
            entries = self._run("list", path, listing)
        except errors.TransportError as exc:
            if not isinstance(exc.__cause__, OSError) or exc.__cause__.errno != errno.ENOENT:
                raise
            raise errors.TransportError(f"{exc.cause}; relative goal directories are resolved against sftp.home "
                                        f"({self._home_in_words()})") from exc
        found = [_remote_file(*entry, attrs) for raw, attrs in entries
                 if (entry := confine.classify(path, raw, attrs.st_mode or 0)) is not None]
        logger.debug("listed %s: %d files", path, len(found))
        return sorted(found, key=lambda file: file.name)

    def stat(self, path: str) -> RemoteFile | None:
        """Given a path, return it as a RemoteFile. Raise TransportError if it is not a regular
        file or cannot be read. Contract: None when missing.
        """
        target = self._abs(path, "stat")
        attrs = self._run("stat", target, lambda sftp: _stat_or_none(sftp, target))
        if attrs is not None and not stat.S_ISREG(attrs.st_mode or 0):
            raise errors.TransportError(f"cannot stat {target}: not a regular file")
        return None if attrs is None else _remote_file(target, None, attrs)

    def download(self, remote: RemoteFile, local: Path, *, max_bytes: int | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        """Given a listed file and a local path, stream it there. Raise InputError if it is over
        max_bytes, TransportError if it is missing, fails, or its size is not the listed one.

        Raise InputError if the file is `refused`, or is no longer a regular file (a link now).

        Contract: local appears whole (temp file, then os.replace) or not at all.
        """
        if remote.refused is not None:
            raise errors.InputError(f"not read: {remote.refused}; rename or remove it on the server", file=remote.path)
        self._abs(remote.path, "download")
        if max_bytes is not None and remote.size > max_bytes:
            raise errors.InputError(f"{remote.path} is {remote.size} bytes, over the limit "
                                    f"of {max_bytes} bytes (max_file_bytes)")
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        os.close(fd)
        try:
            got = self._run("download", remote.path, lambda sftp: _fetch(sftp, remote, tmp, progress))
            if got != remote.size:
                raise errors.TransportError(f"cannot download {remote.path}: got {got} bytes, "
                                            f"the listing said {remote.size} (it changed)")
            os.replace(tmp, local)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
        logger.debug("downloaded %s to %s (%d bytes)", remote.path, local, got)

    def upload_atomic(self, local: Path, remote_path: str) -> None:
        """Given a local file and a remote path, upload it so that no reader sees a part of it.
        Raise TransportError if the upload, its size check or the rename fails.

        Contract: put to partial_name(), check the size, rename over the target (replaced if
        there); the partial is removed on failure; the directory is created if missing. A killed
        process cannot remove its partial: after a success, partials of ours in the directory
        that stopped growing STALE_PARTIAL_S before (server clock) are removed.
        """
        target = self._abs(remote_path, "upload")
        folder, name = posixpath.split(target)
        partial = posixpath.join(folder, partial_name(name))
        size = local.stat().st_size
        self.makedirs(folder)
        try:
            self._run("upload", target, lambda sftp: _put(sftp, local, partial, target, size))
        except errors.TransportError:
            # A connection lost mid-upload could not remove its partial file: try once more on a new one.
            with suppress(errors.TransportError):
                self.remove(partial)
            raise
        logger.debug("uploaded %s to %s (%d bytes)", local, target, size)
        self._remove_stale_partials(folder, target)

    def move(self, path: str, target_dir: str) -> str:
        """Given a remote file and a directory, move the file there and return its new path.
        Raise TransportError if the file is missing or the move is refused.

        Contract: target_dir is created if missing; a file of the same name there is replaced.
        """
        source = self._abs(path, "move")
        folder = self._abs(target_dir, "move to")
        target = posixpath.join(folder, posixpath.basename(source))
        self.makedirs(folder)
        self._run("move", source, lambda sftp: _rename(sftp, source, target))
        logger.debug("moved %s to %s", source, target)
        return target

    def remove(self, path: str) -> None:
        """Given a remote file, delete it. Raise TransportError if the server refuses.
        Contract: idempotent; a missing file is fine.
        """
        target = self._abs(path, "remove")
        self._run("remove", target, lambda sftp: _remove_quietly(sftp, target))
        logger.debug("removed %s", target)

    def check_writable(self, directory: str) -> bool:
        """Given a directory, return True if it exists and a file can be written there (one is written and
        removed), False if it is missing. Raise TransportError if it is not a directory, leads out of
        sftp.home, or the server refuses the write."""
        target = self._abs(directory, "upload to")
        probe = posixpath.join(target, f".sftp-connector-check.{os.urandom(4).hex()}")

        def check(sftp: paramiko.SFTPClient) -> bool:
            attrs = _stat_or_none(sftp, target)
            if attrs is None:
                return False
            if not stat.S_ISDIR(attrs.st_mode or 0):
                raise errors.TransportError(f"cannot upload to {target}: not a directory")
            self._check_real_path(sftp, target, "upload to")
            sftp.open(probe, "wb").close()
            _remove_quietly(sftp, probe)
            return True

        return self._run("upload to", target, check)

    def makedirs(self, directory: str) -> None:
        """Given a remote directory, create it with its parents. Raise TransportError if a file
        is in the way, the server refuses, or the folders would go out of sftp.home through a link.
        Contract: idempotent.
        """
        target = self._abs(directory, "create directory")
        action = "create directory"
        self._run(action, target, lambda sftp: _makedirs(
            sftp, target, lambda existing: self._check_real_path(sftp, existing, action)))

    def close(self) -> None:
        """Close the SFTP channel and the SSH connection(s). Contract: idempotent."""
        if self._link is not None:
            self._link.close()
            self._link = None

    def _remove_stale_partials(self, folder: str, fresh: str) -> None:
        """Remove our partial files in folder older than STALE_PARTIAL_S by the server's clock (the mtime of
        the file just uploaded); a failure is logged, never raised: the upload itself succeeded."""
        try:
            now = self._run("stat", fresh, lambda sftp: sftp.stat(fresh)).st_mtime or 0
            listing = self._run("list", folder, lambda sftp: sftp.listdir_attr(folder))
            for attrs in listing:
                if is_partial_name(attrs.filename) and now - (attrs.st_mtime or 0) > STALE_PARTIAL_S:
                    logger.info("removing %s, left by an upload that was killed", attrs.filename)
                    self.remove(posixpath.join(folder, attrs.filename))
        except errors.TransportError as exc:
            logger.warning("could not look for stale partial uploads in %s: %s", folder, exc)

    def _abs(self, path: str, action: str) -> str:
        """Given a path, return it resolved against home. Raise TransportError if it leaves home."""
        target = resolve(self.home, path)
        if not confine.within(target, self.home):
            raise errors.TransportError(f"cannot {action} {target}: it is outside sftp.home "
                                        f"({self._home_in_words()}), and the connector never leaves its home "
                                        f"on the server{HOME_HINT}")
        return target

    def _home_in_words(self) -> str:
        if self.config.home == "~" or below_login(self.config.home) == "":
            return f"the login directory, {self.home}"
        return self.home if self.config.home == self.home else f"{self.config.home} = {self.home}"

    def _check_real_path(self, sftp: paramiko.SFTPClient, path: str, action: str) -> None:
        """Given an existing directory, raise TransportError if the server resolves it (links) out of home."""
        if self._real_home is None:
            self._real_home = sftp.normalize(self.home)
        real = sftp.normalize(path)
        if not confine.within(real, self._real_home):
            raise errors.TransportError(
                f"cannot {action} {path}: it leads to {real} on the server, outside sftp.home ({self._real_home}); "
                "the connector never follows a symbolic link out of its home")

    def _run(self, action: str, path: str, op: Callable[[paramiko.SFTPClient], T]) -> T:
        def attempt() -> T:
            if self._link is None or not self._link.transport.is_active():
                self.close()
                self._link = login.open_link(self.config)
            link = self._link
            try:
                with login.translated(action, path, link.transport.is_active):
                    return op(link.sftp)
            except errors.TransportError as exc:
                if exc.transient:
                    self.close()
                raise

        return _retrying(self.config.retries, f"{action} {path}", attempt)


# ── operations and retries ──────────────────────────────────────────────────────────


def _remote_file(path: str, refused: str | None, attrs: paramiko.SFTPAttributes) -> RemoteFile:
    return RemoteFile(path=path, size=int(attrs.st_size or 0), mtime=int(attrs.st_mtime or 0), refused=refused)


def _stat_or_none(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None


def _fetch(sftp: paramiko.SFTPClient, remote: RemoteFile, local: str,
           progress: Callable[[int], None] | None = None) -> int:
    copied = 0
    # Listed as a regular file, but a partner may have swapped in a link since (stability waits, other files).
    if not stat.S_ISREG(sftp.lstat(remote.path).st_mode or 0):
        raise errors.InputError(f"not read: {remote.path} is no longer a regular file (a symbolic link now?); "
                                "links are never followed", file=remote.path)
    try:
        with open(local, "wb") as out, sftp.open(remote.path, "rb") as source:
            source.prefetch(remote.size)
            while copied <= remote.size and (chunk := source.read(CHUNK)):
                out.write(chunk)
                copied += len(chunk)
                if progress is not None:
                    progress(copied)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        # Our disk, not the server: no retry helps until space is freed.
        raise errors.GoalError(f"cannot save the download in {os.path.dirname(local)}: "
                               f"{os.strerror(exc.errno).lower()}") from exc
    return copied


def _put(sftp: paramiko.SFTPClient, local: Path, partial: str, target: str, size: int) -> None:
    try:
        # The partial name is predictable: a link planted there would be followed by the open.
        _remove_quietly(sftp, partial)
        sftp.put(str(local), partial, confirm=False)
        arrived = sftp.stat(partial).st_size
        if arrived != size:
            raise errors.TransportError(f"cannot upload {target}: the server has {arrived} of "
                                        f"{size} bytes", transient=True)
        _rename(sftp, partial, target)
    except BaseException:
        with suppress(Exception):
            sftp.remove(partial)
        raise


def _rename(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    try:
        sftp.posix_rename(source, target)
    except OSError as exc:
        if exc.errno is not None:  # a real refusal, not a server without posix-rename
            raise
        _remove_quietly(sftp, target)
        sftp.rename(source, target)


def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    with suppress(FileNotFoundError):
        sftp.remove(path)


def _makedirs(sftp: paramiko.SFTPClient, path: str, check: Callable[[str], None]) -> None:
    attrs = _stat_or_none(sftp, path)
    if attrs is not None and not stat.S_ISDIR(attrs.st_mode or 0):
        raise errors.TransportError(f"cannot create directory {path}: a file is in the way")
    if attrs is not None:
        check(path)  # the deepest folder that exists: where new ones would go
        return
    if posixpath.dirname(path) not in (path, ""):
        _makedirs(sftp, posixpath.dirname(path), check)
    try:
        sftp.mkdir(path)
    except OSError:
        if _stat_or_none(sftp, path) is None:  # else another client made it meanwhile
            raise


def _retrying(retries: int, what: str, attempt: Callable[[], T]) -> T:
    for number in range(retries + 1):
        try:
            return attempt()
        except errors.TransportError as exc:
            if not exc.transient or number == retries:
                raise
            delay = min(BACKOFF_S * 2**number, BACKOFF_MAX_S)
            logger.warning("%s failed (%s); retry %d of %d in %.1fs", what, exc.cause,
                           number + 1, retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
