"""Who is at the console: password hashes, tokens, sessions, CSRF tokens, and where the console may listen.

The console shows personal data and starts runs. On 127.0.0.1 without configured users it
trusts whoever reaches it (an operator on the machine; the same person could run the CLI).
On any other address it refuses to start without users. Each user signs in with a password
(kept in a file as an scrypt hash) or a token (a `*_file` secret, also accepted as a bearer
token). Sessions live in this process's memory: a restart signs everyone out, which is the
safe way round.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from sftp_connector.config.connector import ConsoleUser

Role = Literal["viewer", "operator"]
LOCAL_USER = "local"
"""The name runs and unmasks are recorded under when the console has no users (loopback only)."""
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MAX_SESSIONS = 10_000
ANONYMOUS_S = 600.0
"""How long a session that has not signed in lives: long enough to fill in the sign-in form."""


def hash_password(password: str) -> str:
    """Given a password, return the line to keep in a password_hash_file: scrypt$n$r$p$salt$hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "$".join(["scrypt", *(str(_SCRYPT[k]) for k in ("n", "r", "p")), _b64(salt), _b64(digest)])


def password_matches(password: str, stored: str) -> bool:
    """Given a typed password and a stored hash line, return whether they match (in constant time)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        found = hashlib.scrypt(password.encode(), salt=_unb64(salt), dklen=len(_unb64(digest)), n=int(n), r=int(r),
                               p=int(p), maxmem=2**26)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, _unb64(digest))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_problem(host: str, users: list[ConsoleUser]) -> str | None:
    """Given where the console would listen and its users, return why it must not start there, or None."""
    if users or is_loopback(host):
        return None
    return (f"the console would listen on {host} without authentication: it shows personal data and starts runs. "
            "Add users under console.users in connector.yaml (a password_hash_file made with "
            "`sftp-connector console --hash-password`, or a token_file), or listen on 127.0.0.1 and put a "
            "reverse proxy in front")


@dataclass(frozen=True, slots=True)
class Identity:
    """A signed-in user (or the local operator) and what they may do."""

    user: str
    role: Role

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def authenticate(users: list[ConsoleUser], name: str, secret: str) -> Identity | None:
    """Given the configured users, a user name and a typed password or token, return who signed in, or None."""
    for user in users:
        if not hmac.compare_digest(user.name.encode(), name.encode()):
            continue
        if user.password_hash is not None and password_matches(secret, user.password_hash.get_secret_value()):
            return Identity(user.name, user.role)
        if user.token is not None and hmac.compare_digest(user.token.get_secret_value().encode(), secret.encode()):
            return Identity(user.name, user.role)
    return None


def bearer(users: list[ConsoleUser], token: str) -> Identity | None:
    """Given a bearer token, return the user whose token it is, or None."""
    for user in users:
        if user.token is not None and hmac.compare_digest(user.token.get_secret_value().encode(), token.encode()):
            return Identity(user.name, user.role)
    return None


@dataclass(slots=True)
class Session:
    """One browser's session: who (None until signed in), its CSRF token, until when it is valid."""

    identity: Identity | None
    csrf: str
    expires: float
    unmasked: bool = False
    """An operator asked to see personal data unmasked (recorded in the audit log)."""


@dataclass
class Sessions:
    """The sessions of this process, by their random cookie value."""

    lifetime_s: float
    _by_id: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new(self, identity: Identity | None) -> tuple[str, Session]:
        """Start a session (on sign-in a new one replaces the old: no session fixation). One not signed in (the
        sign-in form's) lasts ANONYMOUS_S; past MAX_SESSIONS the oldest of those are dropped, so that requests
        without a cookie can neither fill the memory nor sign anyone out."""
        key = secrets.token_urlsafe(32)
        lifetime = self.lifetime_s if identity is not None else min(self.lifetime_s, ANONYMOUS_S)
        session = Session(identity, secrets.token_urlsafe(32), time.time() + lifetime)
        with self._lock:
            self._forget_expired()
            if len(self._by_id) >= MAX_SESSIONS:
                self._make_room()
            self._by_id[key] = session
        return key, session

    def get(self, key: str | None) -> Session | None:
        if not key:
            return None
        with self._lock:
            session = self._by_id.get(key)
            if session is not None and session.expires < time.time():
                del self._by_id[key]
                return None
            return session

    def end(self, key: str | None) -> None:
        with self._lock:
            self._by_id.pop(key or "", None)

    def _make_room(self) -> None:
        """Drop the oldest sessions not signed in (a flood of sign-in forms signs nobody out), else the oldest."""
        anonymous = [k for k, s in self._by_id.items() if s.identity is None]
        for key in anonymous[: len(self._by_id) - MAX_SESSIONS + 1] or [next(iter(self._by_id))]:
            del self._by_id[key]

    def _forget_expired(self) -> None:
        now = time.time()
        for key in [k for k, s in self._by_id.items() if s.expires < now]:
            del self._by_id[key]


def csrf_matches(session: Session, sent: str | None) -> bool:
    """Whether a state-changing request carries the session's CSRF token."""
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())


@dataclass
class Throttle:
    """Failed sign-ins by user name: after `limit` within `window_s`, that name is refused until the window
    passes (a password cannot be guessed at speed; the refusal is recorded like any failed sign-in)."""

    limit: int = 5
    window_s: float = 600.0
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked(self, name: str) -> bool:
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if t > time.time() - self.window_s]
            self._failures[name] = recent
            return len(recent) >= self.limit

    def failed(self, name: str) -> None:
        with self._lock:
            self._failures.setdefault(name, []).append(time.time())
            if len(self._failures) > 10_000:  # names are typed by anyone: keep the table bounded
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)
