"""Who may act: the dashboard's secret, its sessions and their CSRF tokens.

Actions (cancel, retry, retry-all-failed) are off unless the dashboard was
started with a secret. Then a visitor logs in with it; the session lives in
this process only (a random ID in an HttpOnly, SameSite=Strict cookie; a restart
logs everyone out). Every visitor, logged in or not, has a session with a CSRF
token, which every form carries and every POST must send back: a page of
another site can neither read the token nor (SameSite=Strict) send the cookie.
Logging in gives a new session ID, so a planted cookie is worth nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import os
import secrets
import threading
import time
from pathlib import Path

#: The environment variable that holds the secret (a command-line argument would show in ``ps``).
SECRET_ENV = "BGHTTP_DASHBOARD_SECRET"
#: A shorter secret is refused at start: it could be guessed through the login form.
MIN_SECRET_LENGTH = 16
#: Sessions kept at most (the oldest go first): visitors cannot grow the process without bound.
MAX_SESSIONS = 10_000
SESSION_SECONDS = 12 * 3600
SESSION_COOKIE = "bghttp_dashboard_session"


class SecretError(ValueError):
    """The secret given cannot be used (one line for the CLI)."""


def load_secret(secret_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The secret from ``--secret-file`` or ``BGHTTP_DASHBOARD_SECRET``; None: actions are off."""
    env = os.environ if environ is None else environ
    if secret_file is not None:
        try:
            secret = secret_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise SecretError(f"--secret-file {secret_file}: cannot read it ({error})") from None
        source = f"--secret-file {secret_file}"
    elif env.get(SECRET_ENV):
        secret, source = env[SECRET_ENV].strip(), SECRET_ENV
    else:
        return None
    if len(secret) < MIN_SECRET_LENGTH:
        raise SecretError(f"{source}: the secret must be at least {MIN_SECRET_LENGTH} characters")
    return secret


@dataclasses.dataclass
class Session:
    csrf_token: str
    logged_in: bool
    expires_at: float


class Sessions:
    """The sessions of one dashboard process."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def actions_enabled(self) -> bool:
        return self._secret is not None

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.expires_at < time.time():
                self._sessions.pop(session_id, None)
                return None
            return session

    def new(self, *, logged_in: bool = False) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), logged_in, time.time() + SESSION_SECONDS)
        with self._lock:
            self._sessions[session_id] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session_id, session

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def check_secret(self, given: str) -> bool:
        if self._secret is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._secret.encode("utf-8"))


def csrf_matches(session: Session | None, given: str | None) -> bool:
    return session is not None and bool(given) and hmac.compare_digest(session.csrf_token, given or "")
