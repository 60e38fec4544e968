"""The dashboard's web application (Starlette; served by uvicorn from ``bghttp dashboard``).

Pages are server-rendered Jinja2 templates with autoescape on, and every value
they print passes :func:`visible` first (the environment's ``finalize``), so
text a server or submitter chose can neither become markup nor hide as control
or bidi characters. The pages carry no script at all; the Content-Security-Policy
allows none, and no framing.

Routes: ``/`` overview, ``/workers``, ``/requests``, ``/requests/{id}``,
``/login`` and ``/logout``, and the actions (POST only): ``/requests/{id}/cancel``,
``/requests/{id}/retry``, ``/retry-failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..client import BackgroundHttpClient
from ..config import Settings
from ..errors import BghttpError, StoreError
from ..models import RequestStatus
from ..store import FileStore, is_valid_request_id
from . import fleet
from .auth import SESSION_COOKIE, SESSION_SECONDS, Session, Sessions, csrf_matches
from .queries import PAGE_SIZE, BadFilter, DashboardQueries, RequestFilter, parse_time
from .queues import read_queues
from .visible import visible, visible_line

HERE = Path(__file__).parent
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make a form POST's Origin "null"
    (b"cache-control", b"no-store"),
]
#: A form POST larger than this is refused (the forms hold a token and a short value).
MAX_FORM_BYTES = 16 * 1024
#: A wrong secret waits this long before the answer: guessing through the form is slow.
LOGIN_FAILURE_DELAY = 1.0
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}


class SecurityHeaders:
    """Adds the security headers and ``Server-Timing`` to every answer; refuses foreign ``Host``
    headers when bound to loopback (a DNS-rebinding page would otherwise read the dashboard)."""

    def __init__(self, app: ASGIApp, *, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if self.loopback_only and not _is_loopback_host(scope):
            refusal = Response("this dashboard answers only to 127.0.0.1/localhost\n", 421, media_type="text/plain")
            await refusal(scope, receive, self._wrap(send, started))
            return
        await self.app(scope, receive, self._wrap(send, started))

    @staticmethod
    def _wrap(send: Send, started: float) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers += [*SECURITY_HEADERS, (b"server-timing", f"app;dur={elapsed:.1f}".encode())]
                message = {**message, "headers": headers}
            await send(message)

        return send_with_headers


def _is_loopback_host(scope: Scope) -> bool:
    host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in LOOPBACK_NAMES


def _template_environment() -> jinja2.Environment:
    def finalize(value: Any) -> Any:
        # Every printed string shows its control and bidi characters as escapes; autoescape does the HTML.
        return visible(value) if isinstance(value, str) and not isinstance(value, Markup) else value

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        finalize=finalize,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["line"] = visible_line
    environment.filters["time"] = _time
    environment.filters["clock"] = lambda value: time.strftime("%H:%M", time.gmtime(value))
    environment.filters["ago"] = _ago
    environment.filters["bar"] = _bar_class
    return environment


def _time(value: float | None) -> str:
    if value is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)) + f".{int(value % 1 * 1000):03d}Z"


def _ago(value: float | None) -> str:
    if value is None:
        return "-"
    seconds = time.time() - value
    if abs(seconds) < 90:
        return f"{seconds:.0f} s ago"
    if abs(seconds) < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


class AlreadyFinished(BghttpError):
    """A cancel that found the request finished: nothing was cancelled (``bghttp cancel`` exits 1)."""


def _cancel(client: BackgroundHttpClient, request_id: str) -> str:
    before = client.get_request_status(request_id)
    record = client.cancel(request_id)
    if record.status is not RequestStatus.CANCELLED or (before is not None and before.is_terminal):
        # The page was shown before the request ended (its button is off for a finished one).
        raise AlreadyFinished(f"{request_id} had already finished: {record.status.value}; nothing was cancelled")
    return f"{request_id} is {record.status.value}"


def _shown_at(raw: str | None) -> float | None:
    """The time a page with a form was rendered (its hidden ``shown_at``), if the form carries a valid one."""
    try:
        value = float(raw or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _bar_class(count: int, largest: int) -> str:
    """A CSS class ``w0``..``w20`` for a bar's width (no inline style: the CSP forbids it)."""
    return f"w{0 if largest <= 0 else round(20 * count / largest)}"


class Dashboard:
    """The pages and actions over one store and queue."""

    def __init__(
        self,
        settings: Settings,
        *,
        secret: str | None,
        client_factory: Callable[[], BackgroundHttpClient] | None = None,
    ) -> None:
        self.settings = settings
        self.store = FileStore(settings.store_dir, fsync=settings.fsync)
        self.queries = DashboardQueries(self.store)
        self.sessions = Sessions(secret)
        self.templates = _template_environment()
        self._client_factory = client_factory or (lambda: BackgroundHttpClient(settings))
        self._client: BackgroundHttpClient | None = None
        self._client_lock = threading.Lock()

    def client(self) -> BackgroundHttpClient:
        """The client the actions use (made at the first action: pages need no broker connection)."""
        with self._client_lock:  # two first actions at once on the thread pool make one client
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # ------------------------------------------------------------ rendering
    def _session(self, request: Request) -> tuple[str, Session, bool]:
        session_id = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(session_id)
        if session_id and session:
            return session_id, session, False
        session_id, session = self.sessions.new()
        return session_id, session, True

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        session_id, session, is_new = self._session(request)
        html = self.templates.get_template(template).render(
            page=template.removesuffix(".html"),
            actions_enabled=self.sessions.actions_enabled,
            logged_in=session.logged_in,
            csrf_token=session.csrf_token,
            store=str(self.store.root),
            queue=self.settings.queue_name,
            **context,
        )
        response = HTMLResponse(html, status_code)
        if is_new:
            _set_session_cookie(response, session_id)
        return response

    def message(self, request: Request, title: str, text: str, status_code: int, back: str = "/") -> Response:
        return self.render(request, "message.html", status_code, title=title, text=text, back=back)

    # ---------------------------------------------------------------- pages
    def overview(self, request: Request) -> Response:
        now = time.time()
        stats = self.queries.overview(now)
        largest = max([max(b.completed, b.failed) for b in stats.buckets] + [0])
        return self.render(
            request,
            "overview.html",
            shown_at=repr(now),
            stats=stats,
            largest=largest,
            queues=read_queues(self.settings.broker_url, self.settings.queue_name),
            fleet=fleet.read(self.store.root, now),
        )

    def workers(self, request: Request) -> Response:
        return self.render(request, "workers.html", fleet=fleet.read(self.store.root, time.time()))

    def requests(self, request: Request) -> Response:
        params = {key: request.query_params.get(key, "") for key in ("status", "host", "since", "until", "q")}
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        error, result = None, None
        try:
            wanted = RequestFilter.parse(params, time.time())
            result = self.queries.list_requests(wanted, page, PAGE_SIZE)
        except BadFilter as bad:
            error = str(bad)
        query = {key: value for key, value in params.items() if value}
        return self.render(
            request,
            "requests.html",
            400 if error else 200,
            params=params,
            error=error,
            result=result,
            previous_url=f"/requests?{urllib.parse.urlencode({**query, 'page': page - 1})}" if page > 1 else None,
            next_url=f"/requests?{urllib.parse.urlencode({**query, 'page': page + 1})}",
            statuses=["in_progress", "completed", "failed", "cancelled"],
        )

    def request_page(self, request: Request) -> Response:
        request_id = request.path_params["request_id"]
        detail = self.queries.request_detail(request_id)
        if detail is None:
            why = "is not a request ID" if not is_valid_request_id(request_id) else "is not in the store"
            return self.message(request, "Not found", f"{request_id!r} {why}.", 404, back="/requests")
        return self.render(request, "request.html", detail=detail, record=detail.record)

    # ---------------------------------------------------------------- login
    def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", error=None)

    async def login(self, request: Request) -> Response:
        form, refusal = await self._checked_form(request, need_login=False)
        if refusal is not None:
            return refusal
        if not self.sessions.check_secret(form.get("secret", "")):
            await asyncio.sleep(LOGIN_FAILURE_DELAY)
            return self.render(request, "login.html", 403, error="That is not the dashboard's secret.")
        self.sessions.drop(request.cookies.get(SESSION_COOKIE))
        session_id, _ = self.sessions.new(logged_in=True)  # a new ID: a planted cookie is worth nothing
        response = RedirectResponse("/requests", 303)
        _set_session_cookie(response, session_id)
        return response

    async def logout(self, request: Request) -> Response:
        _, refusal = await self._checked_form(request, need_login=False)
        if refusal is not None:
            return refusal
        self.sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -------------------------------------------------------------- actions
    async def cancel(self, request: Request) -> Response:
        return await self._act(request, _cancel)

    async def retry(self, request: Request) -> Response:
        return await self._act(request, lambda client, rid: f"{rid} is {client.retry(rid).phase.value} again")

    async def retry_failed(self, request: Request) -> Response:
        form, refusal = await self._checked_form(request, need_login=True)
        if refusal is not None:
            return refusal
        now = time.time()
        try:
            since = parse_time(form.get("since"), now, "since")
        except BadFilter as bad:
            return self.message(request, "Not retried", str(bad), 400, back="/requests?status=failed")
        if since is None:
            return self.message(request, "Not retried", "give since: an age or a time", 400, back="/")
        # Only the failures the page could show: those its own retries bring about after it was
        # shown (a second click, a form sent again) are not retried again.
        until = min(_shown_at(form.get("shown_at")) or now, now)
        retried, refused = await run_in_threadpool(self._retry_all, since, until)
        text = f"Retried {retried} failed request(s)."
        if refused:
            text += f" {len(refused)} refused: {'; '.join(refused[:5])}"
        return self.message(request, "Retried", text, 200, back="/requests?status=failed")

    def _retry_all(self, since: float, until: float) -> tuple[int, list[str]]:
        retried, refused = 0, []
        for request_id in self.queries.failed_since(since, until):
            try:
                self.client().retry(request_id)
                retried += 1
            except BghttpError as error:
                refused.append(f"{request_id}: {error}")
        return retried, refused

    async def _act(self, request: Request, action: Callable[[BackgroundHttpClient, str], str]) -> Response:
        _, refusal = await self._checked_form(request, need_login=True)
        if refusal is not None:
            return refusal
        request_id = request.path_params["request_id"]
        back = f"/requests/{urllib.parse.quote(request_id)}"
        if not is_valid_request_id(request_id):
            return self.message(request, "Refused", f"{request_id!r} is not a request ID.", 404, back="/requests")
        try:
            text = await run_in_threadpool(action, self.client(), request_id)
        except BghttpError as error:
            return self.message(request, "Refused", str(error), 409, back=back)
        return self.message(request, "Done", text, 200, back=back)

    async def _checked_form(self, request: Request, *, need_login: bool) -> tuple[dict[str, str], Response | None]:
        """The POSTed form if the request may act; else a 403 (or 413) page saying why."""
        if not self.sessions.actions_enabled:
            return {}, self.message(
                request,
                "Actions are off",
                "This dashboard was started without a secret: it only shows. Start it with "
                "BGHTTP_DASHBOARD_SECRET or --secret-file to cancel and retry from here.",
                403,
            )
        body = await _read_limited(request)
        if body is None:
            return {}, self.message(request, "Refused", "The form is too large.", 413)
        form = {key: values[-1] for key, values in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if not _same_origin(request):
            return form, self.message(request, "Refused", "The form came from another site.", 403)
        if not csrf_matches(session, form.get("csrf_token")):
            return form, self.message(
                request, "Refused", "The form's CSRF token is missing or stale: reload the page and try again.", 403
            )
        if need_login and (session is None or not session.logged_in):
            return form, self.message(request, "Refused", "Log in with the dashboard's secret first.", 403, "/login")
        return form, None


async def _read_limited(request: Request) -> bytes | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return body


def _same_origin(request: Request) -> bool:
    """An ``Origin`` header, when the browser sends one, names this dashboard."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _set_session_cookie(response: Response, session_id: str) -> None:
    response.set_cookie(SESSION_COOKIE, session_id, max_age=SESSION_SECONDS, path="/", httponly=True, samesite="strict")


def create_app(
    settings: Settings,
    *,
    secret: str | None = None,
    loopback_only: bool = True,
    client_factory: Callable[[], BackgroundHttpClient] | None = None,
) -> Starlette:
    """The dashboard as an ASGI application. ``secret`` None: actions are off (403)."""
    dashboard = Dashboard(settings, secret=secret, client_factory=client_factory)
    routes = [
        Route("/", dashboard.overview),
        Route("/workers", dashboard.workers),
        Route("/requests", dashboard.requests),
        Route("/requests/{request_id}", dashboard.request_page),
        Route("/requests/{request_id}/cancel", dashboard.cancel, methods=["POST"]),
        Route("/requests/{request_id}/retry", dashboard.retry, methods=["POST"]),
        Route("/retry-failed", dashboard.retry_failed, methods=["POST"]),
        Route("/login", dashboard.login_form, methods=["GET"]),
        Route("/login", dashboard.login, methods=["POST"]),
        Route("/logout", dashboard.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Learn the request files' times before the first page asks (a stat per request).
        warming = asyncio.get_running_loop().run_in_executor(None, dashboard.queries.newest_first)
        yield
        with contextlib.suppress(StoreError):  # a store that cannot be listed says so on each page instead
            await warming
        dashboard.close()

    async def store_unreadable(request: Request, error: Exception) -> Response:
        return dashboard.message(request, "The store cannot be read", str(error), 503)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={StoreError: store_unreadable})
    app.state.dashboard = dashboard
    app.add_middleware(SecurityHeaders, loopback_only=loopback_only)
    return app
