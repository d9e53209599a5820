"""OpenPGP for the connector: python-gnupg over the real `gpg` binary, in the connector's own home.

OpenPGP is whole-message: `decrypt` turns a downloaded file into a local plaintext file and checks
its signature before any row is trusted; `Decryption` does the same on a thread while the plaintext
is read, and its caller trusts nothing before `wait` returned; `encrypt` does the reverse for
exports. gpg streams both ways (plaintext reaches us in chunks, counted against max_bytes), so
no file is held in memory. Plaintext past max_bytes stops gpg at once, and a reader of it gets the
size error at its next read, however much plaintext is still unread (a compression bomb).

- The home is `pgp.gnupg_home`, passed as `--homedir`; GNUPGHOME is removed from gpg's
  environment, so ~/.gnupg is never read or written.
- Its gpg-agent.conf sets both cache TTLs to 0 and every call uses `--pinentry-mode loopback`:
  the configured passphrase is checked on every operation, a wrong one fails even right after
  the right one was used.
- gpg-agent binds a socket in the home, and a socket path over 107 bytes cannot be bound (every
  secret-key operation then fails). For a deep home `open_keyring` asks `gpgconf --create-socketdir`
  for one under /run/user/<uid>, and raises a ConfigError naming the fix if there is none.

This module decrypts and encrypts files and turns gpg's status lines into operator messages;
`keys` holds the home, the gpg handle and key import/listing (re-exported here).
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sftp_connector import errors
from sftp_connector.pgp import keys
from sftp_connector.pgp.keys import KeyInfo, Keyring, import_keys, list_keys, open_keyring, stop_agent

__all__ = [
    "ENCRYPTED_SUFFIXES",
    "Decrypted",
    "Decryption",
    "KeyInfo",
    "Keyring",
    "Verified",
    "checked",
    "decrypt",
    "encrypt",
    "import_keys",
    "list_keys",
    "looks_encrypted",
    "open_keyring",
    "stop_agent",
]

logger = logging.getLogger(__name__)

ENCRYPTED_SUFFIXES = (".gpg", ".pgp", ".asc")
_GPG_ERR_BAD_PASSPHRASE = 11
BLOCK = 1 << 20  # plaintext bytes between flushes that readers of a running decryption see


@dataclass(frozen=True, slots=True)
class Decrypted:
    """What `decrypt` learnt about a file's signature."""

    signer: str | None
    """Primary-key fingerprint of a good signature's key, else None."""
    signed: bool
    """A signature was present, even one from an unknown key."""
    signer_key_id: str | None
    """Key id of the signer when its key is not in the keyring (or its signature is unusable)."""
    unusable: str | None = None
    """Why a signature by a known key does not count, as the end of "signed by …": its key expired or was
    revoked, and when."""


class _KilledPipeFilter(logging.Filter):
    """Drops python-gnupg's broken-pipe traceback: it follows `decrypt` stopping gpg, which raises its own error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], BrokenPipeError))


logging.getLogger("gnupg").addFilter(_KilledPipeFilter())


def looks_encrypted(path: Path) -> bool:
    """Given a local file, return True if its suffix or first bytes say OpenPGP. Raise InputError if unreadable."""
    if path.suffix.lower() in ENCRYPTED_SUFFIXES:
        return True
    try:
        with path.open("rb") as file:
            head = file.read(64)
    except OSError as exc:
        raise errors.InputError(f"cannot read {path}: {exc.strerror}", file=str(path)) from exc
    return head.lstrip().startswith(b"-----BEGIN PGP MESSAGE-----") or _is_packet_header(head)


def decrypt(keyring: Keyring, src: Path, dst: Path, *, passphrase: str | None,
            require_signers: Sequence[str] = (), max_bytes: int | None = None) -> Decrypted:
    """Given an encrypted file, write its plaintext to dst and return who signed it.

    Raise CryptoError if it cannot be decrypted, its signature is bad or not from one of
    require_signers; InputError if the plaintext exceeds max_bytes (dst is then removed).
    """
    return Decryption(keyring, src, dst, passphrase=passphrase, require_signers=require_signers,
                      max_bytes=max_bytes).wait()


@dataclass(slots=True)
class Verified:
    """Set when `checked` exits cleanly: who signed the file (fingerprint, or key id if the key is unknown)."""

    signer: str | None = None


@contextlib.contextmanager
def checked(decryption: Decryption | None) -> Iterator[Verified]:
    """Work on a plaintext gpg may still be writing. On a clean exit, wait for gpg: raise if its signature or
    integrity check failed, else set the signer (once). If the work fails while gpg fails too, gpg's error
    is raised (the rows of an altered file mean nothing); a shutdown or any other failure stops gpg.
    With no decryption under way (a plaintext file, or one verified before), only the work runs."""
    verified = Verified()
    if decryption is None:
        yield verified
        return
    try:
        yield verified
    except errors.Interrupted:
        decryption.stop()
        raise
    except errors.GoalError as exc:
        try:
            decryption.wait()
        except errors.GoalError as failed:
            if failed is not exc:
                raise failed from exc
        raise
    except BaseException:
        decryption.stop()
        raise
    outcome = decryption.wait()
    verified.signer = outcome.signer or outcome.signer_key_id


class Decryption:
    """`decrypt` on a thread of its own: `open` reads the plaintext while gpg still writes it.

    Nothing read before `wait` returned may be trusted or kept: the signature and OpenPGP's
    integrity check come at the end of the data. The caller reads it into a transaction and
    commits only after `wait`; `wait` raises as `decrypt` does. A caller that works on the
    plaintext in steps checks `failed` between them, so that a failure stops its work early.
    """

    def __init__(self, keyring: Keyring, src: Path, dst: Path, *, passphrase: str | None,
                 require_signers: Sequence[str] = (), max_bytes: int | None = None,
                 symmetric_passphrase: str | None = None) -> None:
        if not src.is_file():
            raise errors.InputError(f"file {src} not found", file=str(src))
        if src.stat().st_size == 0:
            raise errors.CryptoError("the file is empty (0 bytes), not OpenPGP data: it is tried again on the next "
                                     "run", file=str(src))
        first = _first_packet(src)
        if first not in _MESSAGE_STARTS:
            raise errors.CryptoError("not OpenPGP data: the name says encrypted, but the file holds something else "
                                     "(sent unencrypted, or under the wrong name?)", file=str(src))
        self._symmetric = first == _SKESK
        if self._symmetric:  # gpg would take the private key's passphrase for the file's: never give it that one
            if not symmetric_passphrase:
                raise errors.CryptoError(_SYMMETRIC_NEEDED, file=str(src))
            passphrase = symmetric_passphrase
        self._progress = _Progress()
        self._outcome: Decrypted | BaseException | None = None
        self._sink: _Sink | None = None
        self._stopping = threading.Event()
        self._tmp: Path | None = None
        self._dst = dst
        args = (keyring, src, dst, passphrase or None, require_signers, max_bytes)  # "": gpg would read the data
        self._thread = threading.Thread(target=self._run, args=args, name="decrypt", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        """True once gpg has failed or was stopped, or its plaintext passed max_bytes (even before gpg has
        exited): what was read is not to be used, and `wait` raises why."""
        return self._progress.refusal is not None or isinstance(self._outcome, BaseException)

    @property
    def plaintext_bytes(self) -> int:
        """How many bytes of plaintext gpg has written so far (all of it once it is done)."""
        return self._progress.flushed

    def open(self) -> IO[bytes]:
        """Return the plaintext as a file: a read waits for gpg to write that far (b"" once gpg is done).
        Raise as `wait` does if gpg failed before it; a read raises InputError once the plaintext has
        passed max_bytes."""
        self._progress.wait_started()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                return io.BufferedReader(_Growing(self._tmp.open("rb", buffering=0), self._progress), BLOCK)
        self.wait()  # gpg is done: its temp file was renamed to dst, or removed if gpg failed (raised here)
        return self._dst.open("rb")

    def wait_running(self) -> None:
        """Wait until gpg runs for this file (it holds the keyring), or has finished."""
        self._progress.wait_started()

    def wait(self) -> Decrypted:
        """Wait for gpg; return who signed the file. Raise as `decrypt` does."""
        self._thread.join()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome

    def stop(self) -> None:
        """Stop gpg, if it still runs, and wait for it: the plaintext is not wanted (a shutdown). A finished
        decryption is left alone: the keyring's gpg process is by then another file's."""
        if not self._thread.is_alive():
            return
        self._stopping.set()
        if self._sink is not None:
            self._sink.stop()
        self._thread.join()

    def _run(self, keyring: Keyring, src: Path, dst: Path, passphrase: str | None,
             require_signers: Sequence[str], max_bytes: int | None) -> None:
        try:
            self._outcome = self._decrypt(keyring, src, dst, passphrase, require_signers, max_bytes)
        except BaseException as exc:  # handed to wait()
            self._outcome = exc
        finally:
            self._progress.finish()

    def _decrypt(self, keyring: Keyring, src: Path, dst: Path, passphrase: str | None,
                 require_signers: Sequence[str], max_bytes: int | None) -> Decrypted:
        with _atomic(dst, what="the decrypted file") as (out, tmp):
            too_big = errors.InputError(f"decrypted size exceeds max_file_bytes ({max_bytes})", file=str(src))
            self._tmp, sink = tmp, _Sink(out, max_bytes, keyring.gpg, self._progress, too_big)
            self._sink, sink.stopped = sink, self._stopping.is_set()
            result = _run_decrypt(keyring, src, passphrase, sink)  # readers start once it holds the keyring
            if sink.exceeded:
                dst.unlink(missing_ok=True)
                raise too_big
            if sink.stopped:
                raise errors.CryptoError("decryption stopped", file=str(src))
            if sink.failure is not None:
                raise _write_failed("the decrypted file", tmp, sink.failure, src) from sink.failure
            decrypted = _decryption_outcome(keyring, result, src, passphrase, symmetric=self._symmetric)
            _check_signers(decrypted, require_signers, src)
        logger.debug("decrypted %s (%d bytes, signer %s)", src, sink.written,
                     decrypted.signer or decrypted.signer_key_id)
        return decrypted


def encrypt(keyring: Keyring, src: Path, dst: Path, *, recipients: Sequence[str], sign: bool = False,
            armor: bool = False, passphrase: str | None = None) -> None:
    """Given a plaintext file, write it to dst encrypted to recipients (fingerprints or key files).

    Raise CryptoError if a recipient has no public key or signing fails.
    """
    if not recipients:
        raise errors.CryptoError("no recipients to encrypt to: set pgp.encrypt.recipients")
    if sign and keyring.own_key is None:
        raise errors.CryptoError("signing needs the connector's private key: set pgp.decrypt.private_key")
    fingerprints = [fpr for recipient in recipients for fpr in keys.recipient_fingerprints(keyring, recipient)]
    passphrase = passphrase or None  # python-gnupg would read "" from the data stream
    with _atomic(dst, what="the encrypted file") as (_, tmp), keyring.lock:
        try:
            result = keyring.gpg.encrypt_file(str(src), fingerprints, sign=keyring.own_key if sign else None,
                                              always_trust=True, passphrase=passphrase, armor=armor, output=str(tmp))
        except (OSError, ValueError) as exc:
            raise errors.CryptoError(_os_problem(exc, src), file=str(src)) from exc
        if not result.ok:
            raise errors.CryptoError(_encryption_problem(result, passphrase), file=str(src))
    logger.debug("encrypted %s to %s", src, ", ".join(fingerprints))


# ── decryption ───────────────────────────────────────────────────────────────────────


class _Progress:
    """How much plaintext is in the file for readers to see, whether gpg is done, and whether the
    plaintext was refused (it passed max_bytes: no reader may go on)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._started = False
        self.flushed = 0
        self.done = False
        self.refusal: errors.InputError | None = None

    def start(self) -> None:
        with self._changed:
            self._started = True
            self._changed.notify_all()

    def wait_started(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._started or self.done)

    def advance(self, flushed: int) -> None:
        with self._changed:
            self.flushed = flushed
            self._changed.notify_all()

    def finish(self) -> None:
        with self._changed:
            self.done = True
            self._changed.notify_all()

    def refuse(self, refusal: errors.InputError) -> None:
        with self._changed:
            self.refusal = refusal
            self._changed.notify_all()

    def check(self) -> None:
        """Raise InputError (a copy of the refusal, one per reader's read) if the plaintext was refused."""
        if (refusal := self.refusal) is not None:
            raise errors.InputError(refusal.cause, file=refusal.file)

    def wait_beyond(self, offset: int) -> bool:
        """Wait until the file holds more than offset bytes or gpg is done; return whether gpg is done.
        Raise InputError if the plaintext is refused first."""
        with self._changed:
            self._changed.wait_for(lambda: self.done or self.refusal is not None or self.flushed > offset)
            self.check()
            return self.done


class _Growing(io.RawIOBase):
    """The plaintext file as gpg writes it: a read at its end waits for more, until gpg is done. Once the
    plaintext is refused, every read raises, even of bytes already in the file."""

    def __init__(self, file: io.FileIO, progress: _Progress) -> None:
        super().__init__()
        self._file = file
        self._progress = progress

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            self._progress.check()
            count = self._file.readinto(buffer)
            if count:
                return count
            if self._progress.wait_beyond(self._file.tell()):  # gpg is done: this read is the last word
                return self._file.readinto(buffer) or 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:  # the end is known once gpg is done
            self._progress.wait_beyond(sys.maxsize)
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


@dataclass(slots=True)
class _Sink:
    """Receives gpg's plaintext chunks: writes them, counts them, stops gpg past the limit or when asked.

    Every BLOCK bytes it flushes the file and tells readers how far it reaches; past the limit it
    tells them `too_big` at once, before gpg has exited."""

    out: IO[bytes]
    limit: int | None
    gpg: keys.Gpg
    progress: _Progress
    too_big: errors.InputError
    written: int = 0
    exceeded: bool = False
    stopped: bool = False
    failure: OSError | None = None
    finished: bool = False
    """gpg is done with this file: the keyring's gpg process may be the next file's, never to be killed here."""

    def write(self, chunk: bytes) -> bool:
        if self.stopped:
            self._kill()
        if self.exceeded or self.stopped or self.failure is not None:
            return False
        if not chunk:  # gpg's end of data
            self._flush()
            return False
        self.written += len(chunk)
        if self.limit is not None and self.written > self.limit:
            self.exceeded = True  # a compression bomb: stop gpg rather than fill the disk, and its readers
            self.progress.refuse(self.too_big)
            self._kill()
            return False
        try:
            self.out.write(chunk)
        except OSError as exc:
            self.failure = exc
        if self.written - self.progress.flushed >= BLOCK:
            self._flush()
        return False  # False: python-gnupg keeps nothing in memory

    def stop(self) -> None:
        self.stopped = True
        self._kill()

    def _kill(self) -> None:
        if not self.finished and self.gpg.process is not None:
            self.gpg.process.kill()

    def _flush(self) -> None:
        try:
            self.out.flush()
        except OSError as exc:
            self.failure = exc
            return
        self.progress.advance(self.written)


def _run_decrypt(keyring: Keyring, src: Path, passphrase: str | None, sink: _Sink) -> Any:
    """Given a file and a sink, run gpg --decrypt into the sink; return the result. Raise CryptoError if gpg fails."""
    with keyring.lock:
        sink.progress.start()
        keyring.gpg.on_data = sink.write
        try:
            return keyring.gpg.decrypt_file(str(src), passphrase=passphrase, always_trust=True)
        except (OSError, ValueError) as exc:
            if sink.exceeded or sink.stopped:  # the killed gpg broke python-gnupg's input pipe
                return None
            raise errors.CryptoError(_os_problem(exc, src), file=str(src)) from exc
        finally:
            keyring.gpg.on_data = None
            sink.finished = True  # under the keyring's lock: no other gpg started yet


def _decryption_outcome(keyring: Keyring, result: Any, src: Path, passphrase: str | None, *,
                        symmetric: bool) -> Decrypted:
    """Given gpg's decrypt result, return the signature found. Raise CryptoError if decryption or signature failed."""
    status = _status(result)
    if "BADSIG" in status:
        key_id = status["BADSIG"][0].split()[0]
        raise errors.CryptoError(f"bad signature (key {key_id}): the file was altered after signing or the "
                                 "signature is forged", file=str(src))
    if "DECRYPTION_OKAY" not in status or {"DECRYPTION_FAILED", "BADMDC"} & status.keys():
        raise errors.CryptoError(_decryption_problem(status, result, passphrase, symmetric=symmetric), file=str(src))
    return _signature(keyring, status)


def _decryption_problem(status: dict[str, list[str]], result: Any, passphrase: str | None, *,
                        symmetric: bool) -> str:
    """Given gpg's status lines of a failed decryption, return the cause in operator words."""
    if symmetric and "PLAINTEXT" not in status:  # gpg says "Bad session key": the passphrase made a wrong one
        return "wrong pgp.decrypt.symmetric_passphrase for this passphrase-encrypted file"
    if _bad_passphrase(status):
        return "wrong passphrase for the connector's private key"
    if "DECRYPTION_FAILED" in status and _without_mdc(status):
        return ("the data has no integrity protection (no MDC, as `gpg --rfc2440` or a very old tool writes it), "
                "so it could have been altered unnoticed: refused; ask the sender to encrypt with integrity "
                "protection, the default of current tools")
    if "NEED_PASSPHRASE" in status and passphrase is None:
        return "the connector's private key needs a passphrase: set pgp.decrypt.passphrase"
    if "NO_SECKEY" in status and "DECRYPTION_KEY" not in status:
        key_ids = ", ".join(dict.fromkeys(status["NO_SECKEY"]))
        return f"no secret key for this file: it is encrypted to key {key_ids}; import the matching private key"
    if "PLAINTEXT" in status and "BEGIN_DECRYPTION" not in status:
        return "the file is OpenPGP data but not encrypted: ask the sender to encrypt it"
    if "BADMDC" in status:
        return "corrupt or truncated OpenPGP data (integrity check failed: the file was altered)"
    said = keys.gpg_says(result)
    return "corrupt or truncated OpenPGP data" + (f" ({said})" if said else "")


def _without_mdc(status: dict[str, list[str]]) -> bool:
    """Given gpg's status lines, return True if the data had no integrity protection (DECRYPTION_INFO's
    first field is the MDC method, 0 for none; AEAD data has its own)."""
    info = (status.get("DECRYPTION_INFO") or [""])[0].split()
    return bool(info) and info[0] == "0" and (len(info) < 3 or info[2] == "0")


def _signature(keyring: Keyring, status: dict[str, list[str]]) -> Decrypted:
    """Given gpg's status lines of a decryption, return who signed it (and why a known key's signature
    does not count, if its key expired or was revoked)."""
    validsig = status.get("VALIDSIG", [""])[0].split()
    primary = validsig[9] if len(validsig) >= 10 else validsig[0] if validsig else None
    if "GOODSIG" in status and primary:
        return Decrypted(signer=primary, signed=True, signer_key_id=None)
    if "EXPKEYSIG" in status and primary:
        expired = status.get("KEYEXPIRED", [""])[0].split()
        when = keys.iso_day(expired[0]) if expired else "an earlier date"
        return Decrypted(signer=None, signed=True, signer_key_id=status["EXPKEYSIG"][0].split()[0],
                         unusable=f"{primary}, whose key expired on {when}: ask the partner for its renewed "
                                  "public key and put it in pgp.decrypt.verify_keys")
    if "REVKEYSIG" in status and primary:
        key_id = status["REVKEYSIG"][0].split()[0]
        which = f" (subkey {key_id})" if not primary.endswith(key_id) else ""
        return Decrypted(signer=None, signed=True, signer_key_id=key_id,
                         unusable=f"{primary}{which}, {keys.revocation(keyring, key_id)}: the partner must sign "
                                  "with a valid key")
    for keyword in ("ERRSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG"):
        if keyword in status:
            return Decrypted(signer=None, signed=True, signer_key_id=status[keyword][0].split()[0])
    return Decrypted(signer=None, signed="NEWSIG" in status, signer_key_id=None)


def _check_signers(decrypted: Decrypted, required: Sequence[str], src: Path) -> None:
    """Given a decryption's signature, accept it if it is one of required. Raise CryptoError otherwise."""
    if not required:
        return
    wanted = [keys.bare_fingerprint(value) or value for value in required]
    if decrypted.signer and any(decrypted.signer.endswith(fpr) for fpr in wanted):
        return
    listed = ", ".join(required)
    if not decrypted.signed:
        raise errors.CryptoError(f"signature required from {listed} but the file is unsigned", file=str(src))
    if decrypted.unusable:
        raise errors.CryptoError(f"signed by {decrypted.unusable}", file=str(src))
    signer = decrypted.signer or (f"unknown or unusable key {decrypted.signer_key_id} "
                                  "(is it in pgp.decrypt.verify_keys?)")
    raise errors.CryptoError(f"signed by {signer}, not by one of {listed}", file=str(src))


# ── helpers ──────────────────────────────────────────────────────────────────────────

_SKESK = 3  # the packet of a passphrase-encrypted session key (RFC 4880 5.3)
_MESSAGE_STARTS = frozenset({1, 2, 3, 4, 8, 9, 10, 11, 18, 20})
"""Tags of the packets an OpenPGP message can start with: session keys, signatures, compressed, encrypted,
marker and literal data (RFC 4880 11.3; 20 is AEAD data)."""
_SYMMETRIC_NEEDED = ("the file is encrypted with a passphrase only (symmetric), not to the connector's key: set "
                     "pgp.decrypt.symmetric_passphrase (or symmetric_passphrase_file) to the passphrase the partner "
                     "used")
_ARMOR = b"-----BEGIN PGP MESSAGE-----"


def _first_packet(path: Path) -> int | None:
    """Given an OpenPGP file (binary or armored), return the tag of its first packet, or None if unreadable."""
    with path.open("rb") as file:
        head = file.read(4096)
    if head.lstrip().startswith(_ARMOR):
        lines = head.lstrip()[len(_ARMOR):].splitlines()
        body = b"".join(lines[lines.index(b"", 1) + 1:][:2]) if b"" in lines[1:] else b""
        try:
            head = base64.b64decode(body[:8], validate=False)
        except ValueError:
            return None
    return _packet_tag(head[0]) if head and head[0] & 0x80 else None


def _packet_tag(first: int) -> int:
    """Given a packet's first octet, return its tag: 6 bits in the new format, 4 in the old."""
    return first & 0x3F if first & 0x40 else (first >> 2) & 0x0F



@contextlib.contextmanager
def _atomic(dst: Path, *, what: str) -> Iterator[tuple[IO[bytes], Path]]:
    """Given a target path and what it holds, yield a temp file beside it, moved onto it only if the block
    succeeds. Raise GoalError if writing it fails (a full disk)."""
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file, tmp
    except OSError as exc:  # closing flushes the last buffered bytes: a full disk shows here too
        tmp.unlink(missing_ok=True)
        raise _write_failed(what, tmp, exc, dst) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)


def _write_failed(what: str, tmp: Path, exc: OSError, src: Path) -> errors.GoalError:
    """Given a failed local write, return the GoalError naming what, the folder and the cause (no space left…)."""
    cause = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return errors.GoalError(f"cannot write {what} in {tmp.parent}: {cause}", file=str(src))


def _status(result: Any) -> dict[str, list[str]]:
    """Given a python-gnupg result, return its [GNUPG:] status lines as keyword → values."""
    lines: dict[str, list[str]] = {}
    for line in (getattr(result, "stderr", None) or "").splitlines():
        if line.startswith("[GNUPG:] "):
            keyword, _, value = line[9:].partition(" ")
            lines.setdefault(keyword, []).append(value)
    return lines


def _bad_passphrase(status: dict[str, list[str]]) -> bool:
    """Given gpg's status lines, return True if an operation failed for a wrong passphrase."""
    codes = [value.rsplit(" ", 1)[-1] for value in status.get("ERROR", []) + status.get("FAILURE", [])]
    return "BAD_PASSPHRASE" in status or any(
        code.isdigit() and int(code) & 0xFFFF == _GPG_ERR_BAD_PASSPHRASE for code in codes)


def _os_problem(exc: Exception, src: Path) -> str:
    """Given an exception from python-gnupg, return it in operator words, never echoing a passphrase."""
    if isinstance(exc, ValueError) and "passphrase" in str(exc).lower():
        return "the configured passphrase contains a line break or NUL, which gpg cannot take"
    return f"gpg failed on {src}: {exc.__class__.__name__}: {exc}"


def _encryption_problem(result: Any, passphrase: str | None) -> str:
    """Given gpg's status lines of a failed encryption, return the cause in operator words."""
    status = _status(result)
    if "INV_RECP" in status:
        names = ", ".join(value.split(None, 1)[-1] for value in status["INV_RECP"])
        return f"no public key for recipient {names} (or it cannot encrypt)"
    if _bad_passphrase(status):
        return "cannot sign: wrong passphrase for the connector's private key"
    if "NEED_PASSPHRASE" in status and passphrase is None:
        return "cannot sign: the connector's private key needs a passphrase: set pgp.decrypt.passphrase"
    return f"encryption failed ({keys.gpg_says(result) or result.status})"


# Message-opening packet tags → the first body octets they allow (version, algorithm, format or "PGP"):
# public-key / symmetric-key encrypted session key, one-pass signature, compressed, marker, literal data.
_PACKET_BODIES = {1: (b"\x03", b"\x06"), 3: (b"\x04", b"\x05", b"\x06"), 4: (b"\x03", b"\x06"),
                  8: (b"\x00", b"\x01", b"\x02", b"\x03"), 10: (b"PGP",), 11: (b"b", b"t", b"u", b"m", b"l", b"1")}


def _is_packet_header(head: bytes) -> bool:
    """Given a file's first bytes, return True if they start an OpenPGP message packet."""
    if len(head) < 3 or not head[0] & 0x80:
        return False
    tag = _packet_tag(head[0])
    if head[0] & 0x40:  # new format: a 1-, 2-, 5-octet or partial length
        first = head[1]
        size = 1 if first < 192 or 224 <= first < 255 else 2 if first < 224 else 5
    else:  # old format: a 1-, 2-, 4-octet or indeterminate length
        size = (1, 2, 4, 0)[head[0] & 0x03]
    body = head[1 + size:]
    return any(body.startswith(allowed) for allowed in _PACKET_BODIES.get(tag, ()))
