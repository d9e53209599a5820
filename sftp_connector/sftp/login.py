"""Opening the SFTP connection: dial, verify the host key, log in, start the SFTP channel.

`open_link(config)` connects directly or through `proxy_jump` (the bastion is verified
against the same known_hosts and logged in with the same credentials), checks the host key
against known_hosts or the SHA256 pin (never adds it), logs in by password, key, or both
(DSA keys refused), and returns the `Link` that holds the connection(s) open. `translated()`
turns paramiko and socket errors into `TransportError` here and for the Session's operations.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sftp_connector import errors
from sftp_connector.config import models
from sftp_connector.private import private_file

logger = logging.getLogger(__name__)


class _QuietParamiko(logging.Filter):
    """paramiko's transport thread logs the error it hands us (a reset, a banner that never came) at ERROR,
    traceback line by line; the connector reports each failure once, in its own words. Kept at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("paramiko.transport").addFilter(_QuietParamiko())

_NETWORK_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                   errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EBADF}


# ── the connection ──────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class Link:
    """An open connection: the SSH transport, its SFTP channel, and the proxy_jump bastion."""

    transport: paramiko.Transport
    sftp: paramiko.SFTPClient
    bastion: paramiko.Transport | None = None

    def close(self) -> None:
        """Close the SFTP channel and the SSH connection(s), ignoring errors."""
        for closeable in (self.sftp, self.transport, self.bastion):
            if closeable is not None:
                with suppress(Exception):
                    closeable.close()


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    username: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def open_link(config: models.Sftp) -> Link:
    """Given the sftp: config, connect, verify the host key, log in, and return the Link.
    Raise HostKeyError if the host key is unknown or changed, TransportError if it fails.
    """
    key = _load_key(config.auth) if "key" in config.auth.method else None
    known = load_known_hosts(config.known_hosts)
    target = _Target(config.host, config.port, config.username)
    bastion = None
    try:
        if config.proxy_jump:  # verified against the same known_hosts, same credentials
            jump = _jump_target(config)
            bastion = _ssh(_dial(jump, config.timeout_s), config, jump, key, known, pin=None)
            with translated("open a channel via", str(jump)):
                sock: Any = bastion.open_channel("direct-tcpip", (target.host, target.port),
                                                 ("127.0.0.1", 0), timeout=config.timeout_s)
        else:
            sock = _dial(target, config.timeout_s)
        transport = _ssh(sock, config, target, key, known, pin=config.host_key_fingerprint)
        return Link(transport, _open_sftp(transport, config), bastion)
    except BaseException:
        if bastion is not None:
            bastion.close()
        raise


def _dial(target: _Target, timeout: float) -> socket.socket:
    with translated("connect to", str(target)):
        return socket.create_connection((target.host, target.port), timeout=timeout)


def _jump_target(config: models.Sftp) -> _Target:
    match = re.fullmatch(r"(?:([^@]+)@)?([^@:]+)(?::(\d+))?", config.proxy_jump or "")
    if not match:
        raise errors.ConfigError(f"sftp.proxy_jump: expected user@host:port, got "
                                 f"{config.proxy_jump!r}")
    return _Target(match.group(2), int(match.group(3) or 22), match.group(1) or config.username)


def _ssh(sock: Any, config: models.Sftp, target: _Target, key: paramiko.PKey | None,
         known: paramiko.HostKeys | None, pin: str | None) -> paramiko.Transport:
    transport = paramiko.Transport(sock)
    try:
        with translated("connect to", str(target)):
            transport.use_compression(False)
            for name in ("banner_timeout", "handshake_timeout", "auth_timeout",
                         "channel_timeout"):
                setattr(transport, name, config.timeout_s)
            entries = known.lookup(_known_name(target)) if known is not None else None
            _prefer_known_key_types(transport, entries)
            transport.start_client(timeout=config.timeout_s)
            if not transport.is_active() or not transport.initial_kex_done:
                raise errors.TransportError(
                    f"cannot connect to {target}: no SSH greeting and key exchange within {config.timeout_s:g} s "
                    "(sftp.timeout_s): is it an SSH server, and the port right?", transient=True)
            _check_host_key(transport.get_remote_server_key(), target, config.known_hosts,
                            entries, pin)
            _login(transport, config.auth, target, key)
    except BaseException:
        transport.close()
        raise
    logger.debug("logged in as %s@%s", target.username, target)
    return transport


def _dropped_after_login(target: _Target) -> errors.TransportError:
    """The error of a server that said yes to the login, then hung up: not a refusal."""
    return errors.TransportError(
        f"the server accepted the login of {target.username}@{target} and then closed the connection: the "
        "account cannot start a session there (its ChrootDirectory, shell or SFTP subsystem; the server's log "
        "says which)")


def _open_sftp(transport: paramiko.Transport, config: models.Sftp) -> paramiko.SFTPClient:
    target = _Target(config.host, config.port, config.username)
    if not transport.is_active():
        raise _dropped_after_login(target)
    try:
        return _sftp_channel(transport, config)
    except errors.TransportError as exc:
        if transport.is_active() or not isinstance(exc.__cause__, EOFError | ConnectionError | paramiko.SSHException):
            raise
        raise _dropped_after_login(target) from exc


def _sftp_channel(transport: paramiko.Transport, config: models.Sftp) -> paramiko.SFTPClient:
    with translated("start SFTP on", f"{config.host}:{config.port}"):
        sftp = paramiko.SFTPClient.from_transport(transport)
        if sftp is None:
            raise paramiko.ChannelException(0, "the server refused the sftp subsystem")
        sftp.get_channel().settimeout(config.timeout_s)
        return sftp


def _login(transport: paramiko.Transport, auth: models.SftpAuth, target: _Target,
           key: paramiko.PKey | None) -> None:
    step = "key"
    refused = f"login refused for {target.username}@{target} ({auth.method}"
    try:
        if key is not None:
            transport.auth_publickey(target.username, key)
        if auth.password is not None and "password" in auth.method:
            step = "password"
            transport.auth_password(target.username, auth.password.get_secret_value())
    except paramiko.AuthenticationException as exc:
        allowed = getattr(exc, "allowed_types", None)
        hint = f"; the server allows {', '.join(allowed)}" if allowed else ""
        which = f": {step} refused" if "+" in auth.method else ""
        raise errors.TransportError(f"{refused}{which}){hint}") from exc
    if not transport.is_active():
        raise _dropped_after_login(target)
    if not transport.is_authenticated():
        raise errors.TransportError(f"{refused}): the server asks for more (key+password?)")


# ── host keys and private keys ──────────────────────────────────────────────────────


def new_client_key(path: Path, comment: str) -> str:
    """Write a new ed25519 SSH private key (OpenSSH format, 0600, its folder 0700) and its .pub; return the
    public line (for the server's authorized_keys)."""
    key = Ed25519PrivateKey.generate()
    with private_file(path).open("wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode() + f" {comment}"
    path.with_name(path.name + ".pub").write_text(public + "\n")
    return public


def server_host_key(host: str, port: int, timeout_s: float = 30) -> tuple[str, str, str]:
    """Given a server, return its host key as (known_hosts line, key type, SHA256 fingerprint), trusting
    nothing: the caller shows the fingerprint and writes the line only once the operator confirms it.
    Raise TransportError if the server cannot be reached."""
    target = _Target(host, port, "")
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            transport = paramiko.Transport(sock)
            try:
                transport.banner_timeout = transport.handshake_timeout = timeout_s
                transport.start_client(timeout=timeout_s)
                key = transport.get_remote_server_key()
            finally:
                transport.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise errors.TransportError(f"cannot fetch the host key of {target}: {_why(exc)}", transient=True) from exc
    return f"{_known_name(target)} {key.get_name()} {key.get_base64()}", key.get_name(), key.fingerprint


def _known_name(target: _Target) -> str:
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"


def load_known_hosts(path: Path | None) -> paramiko.HostKeys | None:
    try:
        return None if path is None else paramiko.HostKeys(str(path))
    except OSError as exc:
        raise errors.HostKeyError(f"cannot read known_hosts {path}: {_why(exc)}") from exc
    except (paramiko.hostkeys.InvalidHostKey, ValueError, paramiko.SSHException) as exc:
        raise errors.HostKeyError(f"known_hosts {path}: {_bad_known_hosts_line(path)}: fix or remove it") from exc


def _bad_known_hosts_line(path: Path | None) -> str:
    """Given a known_hosts file paramiko refused, return which line is wrong and why."""
    assert path is not None
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except paramiko.hostkeys.InvalidHostKey as exc:
            cause = exc.exc if isinstance(getattr(exc, "exc", None), Exception) else exc
            what = "the key is not valid base64" if "base64" in str(cause) or "padding" in str(cause) \
                else "the key cannot be read"
            return f"line {number} is not a host key line ({what})"
        except (ValueError, paramiko.SSHException):
            return f"line {number} is not a host key line"
    return "a line is not a host key line"


def _prefer_known_key_types(transport: paramiko.Transport, entries: Any) -> None:
    # Ask for the key types known_hosts holds, or the server may show another one.
    known = [kind for name in (entries or {})
             for kind in (("rsa-sha2-512", "rsa-sha2-256") if name == "ssh-rsa" else (name,))]
    options = transport.get_security_options()
    first = [kind for kind in known if kind in options.key_types]
    options.key_types = first + [kind for kind in options.key_types if kind not in first]


def _check_host_key(key: paramiko.PKey, target: _Target, known_hosts: Path | None,
                    entries: Any, pin: str | None) -> None:
    shown = f"{key.get_name()} {key.fingerprint}"
    if pin is not None and key.fingerprint != pin:
        raise errors.HostKeyError(
            f"host key changed for {target} ({shown}, pinned {pin}): possible "
            "man-in-the-middle; if the key was replaced on purpose, update "
            "sftp.host_key_fingerprint")
    if pin is not None and known_hosts is None:
        return
    if not entries:
        raise errors.HostKeyError(
            f"unknown host key for {target} ({shown}): add it to known_hosts, e.g. "
            f"ssh-keyscan -p {target.port} {target.host} >> {known_hosts or 'known_hosts'}")
    if entries.get(key.get_name()) != key:
        raise errors.HostKeyError(
            f"host key changed for {target} ({shown} is not the key in {known_hosts}): "
            "possible man-in-the-middle; if the key was replaced on purpose, remove the old "
            f"line (ssh-keygen -R '{_known_name(target)}') and add the new one")


def _load_key(auth: models.SftpAuth) -> paramiko.PKey:
    path = auth.private_key
    secret = auth.passphrase.get_secret_value().encode() if auth.passphrase else None
    try:
        try:
            return paramiko.PKey.from_path(path, password=secret)
        except TypeError:
            if secret is None:
                raise
            return paramiko.PKey.from_path(path)  # a passphrase given for a plain key
    except paramiko.UnknownKeyType as exc:
        raise errors.TransportError(f"private key {path} is not an ed25519, ecdsa or rsa key; "
                                    "DSA keys are insecure and no longer supported: make a new "
                                    "key with ssh-keygen -t ed25519 and authorize it on the "
                                    "server") from exc
    except TypeError as exc:
        raise errors.TransportError(f"private key {path} is encrypted: give "
                                    "sftp.auth.passphrase") from exc
    except OSError as exc:
        raise errors.TransportError(f"cannot read private key {path}: {_why(exc)}") from exc
    except (ValueError, paramiko.SSHException) as exc:
        cause = "wrong passphrase" if secret else "not an OpenSSH or PEM private key"
        raise errors.TransportError(f"cannot read private key {path}: {cause}") from exc


# ── errors ──────────────────────────────────────────────────────────────────────────


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and (exc.errno or 0) > 0:  # paramiko maps SFTP status to errno
        return os.strerror(exc.errno or 0).lower()
    if isinstance(exc, OSError) and exc.strerror:  # e.g. a resolver error
        return exc.strerror.lower()
    if isinstance(exc, paramiko.ChannelException):
        return f"channel refused: {exc.text.lower()}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, EOFError):
        return "connection closed by the server"
    return str(exc) or type(exc).__name__


@contextmanager
def translated(action: str, path: str, alive: Callable[[], bool] = lambda: True
               ) -> Iterator[None]:
    """Translate paramiko and socket errors raised inside into TransportError."""
    try:
        yield
    except errors.ConnectorError:
        raise
    except UnicodeError as exc:  # paramiko decodes every name it is sent as UTF-8
        raise errors.TransportError(f"cannot {action} {path}: the server sent a name that is not "
                                    "valid UTF-8") from exc
    except paramiko.ChannelException as exc:
        raise errors.TransportError(f"cannot {action} {path}: {_why(exc)}") from exc
    except (EOFError, TimeoutError, ConnectionError, socket.gaierror,
            paramiko.SSHException) as exc:
        raise errors.TransportError(f"cannot {action} {path}: {_why(exc)}",
                                    transient=True) from exc
    except OSError as exc:
        transient = exc.errno in _NETWORK_ERRNOS or not alive()
        raise errors.TransportError(f"cannot {action} {path}: {_why(exc)}",
                                    transient=transient) from exc
