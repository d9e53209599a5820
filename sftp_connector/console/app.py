"""The console's web application: routes, sign-in, roles, CSRF, security headers.

Every page is rendered on the server from Jinja2 templates that escape what they print; the
one script (static/console.js, no inline script anywhere) only polls the live run. Work that
blocks (the store, the SFTP server, gpg) runs in Starlette's thread pool.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sftp_connector.config.connector import ConsoleUser
from sftp_connector.config.load import Config
from sftp_connector.console import audit, auth, views
from sftp_connector.console.jobs import Runs
from sftp_connector.errors import ConfigError, GoalError
from sftp_connector.goals import locks, runner
from sftp_connector.results import iso
from sftp_connector.shown import visible
from sftp_connector.store.db import Store

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "sftpc_session"
MAX_FORM_BYTES = 64 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "Cross-Origin-Opener-Policy": "same-origin",
}


def _templates() -> jinja2.Environment:
    """The pages' templates: every value escaped; `visible` (text from outside, as the CLI shows it) and `iso`
    (a timestamp) to hand in every template and macro."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.globals.update(visible=visible, iso=lambda timestamp: iso(timestamp) or "")
    return env


@dataclass
class Console:
    """What the routes share: where the configuration comes from, the store, sessions, runs, the daemon."""

    config: Callable[[], Config]
    store: Store
    runs: Runs
    sessions: auth.Sessions
    throttle: auth.Throttle = field(default_factory=auth.Throttle)
    daemon_health: Callable[[], dict[str, Any]] | None = None
    metrics: Callable[[], tuple[bytes, str]] | None = None
    keys: views.KeyCache = field(default_factory=views.KeyCache)
    templates: jinja2.Environment = field(default_factory=_templates)

    @property
    def users(self) -> list[ConsoleUser]:
        return list(self.config().connector.console.users)


Handler = Callable[[Request, Console, auth.Identity, auth.Session | None], Awaitable[Response]]


def make_app(console: Console) -> Starlette:
    """Given the console's state, return the ASGI application."""

    def page(handler: Handler, *, operator: bool = False, post: bool = False) -> Callable[[Request],
                                                                                        Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await _guarded(request, console, handler, operator=operator, post=post)
        return endpoint

    routes = [
        Route("/signin", _signin_form, methods=["GET"]),
        Route("/signin", _signin, methods=["POST"]),
        Route("/signout", page(_signout, post=True), methods=["POST"]),
        Route("/", page(_overview)),
        Route("/goals", page(_goals)),
        Route("/goals/{name}/files", page(_files)),
        Route("/goals/{name}/preview", page(_preview)),
        Route("/unmask", page(_unmask, operator=True, post=True), methods=["POST"]),
        Route("/mask", page(_mask, post=True), methods=["POST"]),
        Route("/history", page(_history)),
        Route("/history/{run}", page(_run)),
        Route("/history/{run}/rejects/{name}", page(_rejects)),
        Route("/profiles", page(_profiles)),
        Route("/run", page(_run_page)),
        Route("/run", page(_run_now, operator=True, post=True), methods=["POST"]),
        Route("/live.json", page(_live)),
        Route("/audit", page(_audit, operator=True)),
        Route("/favicon.ico", _no_icon),
        Route("/healthz", _healthz),
        Route("/metrics", _metrics),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not console.users and not _loopback_host(request):
            # No users: only a browser on this machine that asked for a loopback name (DNS rebinding).
            response: Response = PlainTextResponse("this console answers only to 127.0.0.1 and localhost", 421)
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app = Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=headers)])
    app.state.console = console
    return app


def _loopback_host(request: Request) -> bool:
    host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
    return auth.is_loopback(host)


# ── who is asking ────────────────────────────────────────────────────────────────────


async def _guarded(request: Request, console: Console, handler: Handler, *, operator: bool, post: bool) -> Response:
    """Find who asks (session cookie, bearer token, or the local operator), check role and CSRF, then answer."""
    users = console.users
    session = console.sessions.get(request.cookies.get(COOKIE))
    identity = session.identity if session else None
    via_bearer = False
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and users:
        identity, via_bearer = auth.bearer(users, header[7:].strip()), True
        if identity is None:
            return PlainTextResponse("the bearer token is not valid", 401)
    if not users and identity is None:
        key, session = console.sessions.new(auth.Identity(auth.LOCAL_USER, "operator"))
        identity = session.identity
        request.state.new_cookie = key
    if identity is None:
        if post:
            return PlainTextResponse("sign in first", 403)
        return RedirectResponse("/signin?next=" + urllib.parse.quote(request.url.path), 303)
    if post:
        request.state.form = await _form(request)
        # A bearer token is sent by a script, never added by a browser on its own: it needs no CSRF token.
        if not via_bearer and (session is None or not auth.csrf_matches(session, request.state.form.get("csrf"))):
            return PlainTextResponse("the form's CSRF token is missing or wrong: reload the page and try again", 403)
    if operator and not identity.operator:
        return PlainTextResponse(f"{identity.user} is a viewer: only an operator may do this", 403)
    response = await handler(request, console, identity, session)
    if getattr(request.state, "new_cookie", None):
        _set_cookie(request, response, request.state.new_cookie, console)
    return response


async def _form(request: Request) -> dict[str, str]:
    """The posted form's fields; an empty form (so no CSRF token: refused) past MAX_FORM_BYTES, read no further."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}


def _set_cookie(request: Request, response: Response, key: str, console: Console) -> None:
    response.set_cookie(COOKIE, key, max_age=int(console.sessions.lifetime_s), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")


def _render(console: Console, request: Request, template: str, identity: auth.Identity | None,
            session: auth.Session | None, **values: Any) -> Response:
    config = console.config()
    body = console.templates.get_template(template).render(
        name=config.connector.name, identity=identity, csrf=session.csrf if session else "",
        unmasked=bool(session and session.unmasked), path=request.url.path, with_users=bool(console.users),
        **values)
    return Response(body, media_type="text/html; charset=utf-8")


# ── sign-in ──────────────────────────────────────────────────────────────────────────


async def _signin_form(request: Request) -> Response:
    console: Console = request.app.state.console
    if not console.users:
        return RedirectResponse("/", 303)
    key, session = console.sessions.new(None)
    response = _render(console, request, "signin.html", None, session, error=None,
                       next=_local_path(request.query_params.get("next")))
    _set_cookie(request, response, key, console)
    return response


async def _signin(request: Request) -> Response:
    console: Console = request.app.state.console
    users = console.users
    session = console.sessions.get(request.cookies.get(COOKIE))
    form = await _form(request)
    if session is None or not auth.csrf_matches(session, form.get("csrf")):
        return PlainTextResponse("the form's CSRF token is missing or wrong: reload the page and try again", 403)
    name = form.get("user", "")[:64]
    config = console.config()
    if console.throttle.blocked(name):
        audit.record(config.state_dir, visible(name), "sign-in-refused", {"why": "too many failed sign-ins"})
        return _render(console, request, "signin.html", None, session, next=_local_path(form.get("next")),
                       error=f"too many failed sign-ins: wait {console.throttle.window_s / 60:.0f} minutes")
    identity = await run_in_threadpool(auth.authenticate, users, name, form.get("secret", ""))
    if identity is None:
        console.throttle.failed(name)
        audit.record(config.state_dir, visible(name), "sign-in-refused", {})
        return _render(console, request, "signin.html", None, session, error="wrong user name or password",
                       next=_local_path(form.get("next")))
    console.throttle.succeeded(name)
    audit.record(config.state_dir, identity.user, "sign-in", {"role": identity.role})
    console.sessions.end(request.cookies.get(COOKIE))
    key, _ = console.sessions.new(identity)
    response = RedirectResponse(_local_path(form.get("next")), 303)
    _set_cookie(request, response, key, console)
    return response


def _local_path(target: str | None) -> str:
    """Where to go after signing in: a path of this console only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _signout(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                   ) -> Response:
    console.sessions.end(request.cookies.get(COOKIE))
    response = RedirectResponse("/signin" if console.users else "/", 303)
    response.delete_cookie(COOKIE, path="/")
    return response


# ── pages ────────────────────────────────────────────────────────────────────────────


async def _overview(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                    ) -> Response:
    config = console.config()

    def gather() -> dict[str, Any]:
        keys, key_error = console.keys.get(config)
        return {"connection": views.connection(config), "pgp": config.connector.pgp.enabled, "keys": keys,
                "key_error": key_error, "schedule": views.schedule_view(config),
                "health": views.health_view(console.store, console.daemon_health),
                "outcomes": views.last_outcomes(config, console.store)}

    return _render(console, request, "overview.html", identity, session, **await _store_work(gather))


async def _goals(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                 ) -> Response:
    return _render(console, request, "goals.html", identity, session, goals=views.goal_rows(console.config()))


async def _files(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                 ) -> Response:
    name = request.path_params["name"]
    config = console.config()
    found, error = None, None
    try:
        found = await run_in_threadpool(views.detected, config, console.store, name)
    except (ConfigError, GoalError) as exc:
        error = visible(str(exc))
    return _render(console, request, "files.html", identity, session, goal=name, files=found, error=error)


async def _preview(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                   ) -> Response:
    name = request.path_params["name"]
    config = console.config()
    unmasked = bool(session and session.unmasked and identity.operator)
    shown, error = None, None
    try:
        shown = await run_in_threadpool(views.preview_view, config, console.store, name, unmasked=unmasked,
                                        path=request.query_params.get("file"))
    except (ConfigError, GoalError) as exc:
        error = visible(str(exc))
    return _render(console, request, "preview.html", identity, session, goal=name, preview=shown, error=error,
                   read_limit=views.PREVIEW_READ_ROWS)


async def _unmask(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                  ) -> Response:
    if session is None:
        return PlainTextResponse("unmasking lasts for a browser session: sign in with a browser", 400)
    session.unmasked = True
    back = _local_path(request.state.form.get("next"))
    audit.record(console.config().state_dir, identity.user, "unmask", {"page": back})
    return RedirectResponse(back, 303)


async def _mask(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                ) -> Response:
    if session is not None:
        session.unmasked = False
    return RedirectResponse(_local_path(request.state.form.get("next")), 303)


async def _history(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                   ) -> Response:
    page = max(0, _int(request.query_params.get("page")))
    shown = await _store_work(lambda: views.history_page(console.store, page=page))
    return _render(console, request, "history.html", identity, session, **shown)


async def _run(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
               ) -> Response:
    run = request.path_params["run"]
    config = console.config()
    result = await run_in_threadpool(views.run_view, config, console.store, run)
    if result is None:
        return PlainTextResponse("no such run", 404)
    rejects = {g.goal: views.reject_files(config, run, g) for g in result.goals}
    return _render(console, request, "run.html", identity, session, run=result, rejects=rejects,
                   max_files=views.RUN_FILES_SHOWN)


async def _rejects(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                   ) -> Response:
    run, name = request.path_params["run"], request.path_params["name"]
    path = views.reject_path(console.config(), run, name)
    if path is None:
        return PlainTextResponse("no such reject file", 404)
    if request.query_params.get("download"):
        return FileResponse(path, media_type="text/csv", filename=name,
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
    header, rows, more = await run_in_threadpool(views.reject_rows, path)
    return _render(console, request, "rejects.html", identity, session, run=run, file=name, header=header,
                   rows=rows, more=more)


async def _profiles(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                    ) -> Response:
    query = (request.query_params.get("q") or "").strip()[:500]
    found = None
    if query:
        profile = await run_in_threadpool(views.find_profile, console.store, query,
                                          views.identifier_properties(console.config()))
        unmasked = bool(session and session.unmasked and identity.operator)
        masked = set() if unmasked else views.pii_properties(console.config())
        found = views.profile_view(profile, masked) if profile else {}
    return _render(console, request, "profiles.html", identity, session, query=query, profile=found)


async def _run_page(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                    ) -> Response:
    config = console.config()

    def gather() -> list[dict[str, Any]]:
        goals = runner.ordered(config, [g.name for g in config.goals])
        return [{"name": g.name, "kind": g.kind, "enabled": g.enabled,
                 "held": locks.held(console.store, config.state_dir, g.name)} for g in goals]

    live, scheduled = console.runs.last, console.runs.scheduled
    goals = await _store_work(gather)
    error = goals.pop("store_error") if isinstance(goals, dict) else None
    return _render(console, request, "run_now.html", identity, session, goals=goals or [], error=error,
                   live=live.as_json() if live else None, scheduled=scheduled.as_json() if scheduled else None,
                   in_daemon=console.daemon_health is not None, busy=request.query_params.get("busy") == "1")


async def _run_now(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                   ) -> Response:
    form = request.state.form
    config = console.config()
    scope = form.get("goal", "")
    names = [] if scope in ("", "*") else [scope]
    if names and names[0] not in {g.name for g in config.goals}:
        return PlainTextResponse("no such goal", 404)
    dry_run = form.get("dry_run") == "1"
    live = console.runs.start(identity.user, names, dry_run=dry_run)
    if live is None:
        return RedirectResponse("/run?busy=1", 303)
    audit.record(config.state_dir, identity.user, "run", {"goals": names or "all enabled", "dry_run": dry_run})
    return RedirectResponse("/run", 303)


async def _live(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                ) -> Response:
    live = console.runs.scheduled if request.query_params.get("which") == "schedule" else console.runs.last
    return JSONResponse(live.as_json() if live else None)


async def _audit(request: Request, console: Console, identity: auth.Identity, session: auth.Session | None
                 ) -> Response:
    entries = audit.entries(console.config().state_dir)
    return _render(console, request, "audit.html", identity, session, entries=entries)


# ── probes ───────────────────────────────────────────────────────────────────────────


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204)  # a browser asks for it on pages that name none (JSON, the CSV)


async def _healthz(request: Request) -> Response:
    console: Console = request.app.state.console
    if console.daemon_health is None:
        state = {"store": await run_in_threadpool(views.health_view, console.store, None)}
        return JSONResponse({"ok": state["store"]["store"], **state})
    state = await run_in_threadpool(console.daemon_health)
    return JSONResponse(state, 200 if state.get("ok") else 503)


async def _metrics(request: Request) -> Response:
    console: Console = request.app.state.console
    if console.metrics is None:
        return PlainTextResponse("metrics are served by the daemon", 404)
    body, kind = console.metrics()
    return Response(body, media_type=kind)


# ── helpers ──────────────────────────────────────────────────────────────────────────


async def _store_work(work: Callable[[], Any]) -> Any:
    """Run store reads in the thread pool; a store that does not answer becomes the page's error."""
    try:
        return await run_in_threadpool(work)
    except GoalError as exc:
        return {"store_error": visible(str(exc))}


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
