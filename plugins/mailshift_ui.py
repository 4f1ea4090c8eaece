"""mailshift operator UI: an Airflow 3 plugin (FastAPI app under /mailshift + a nav entry).

Thin: the data comes from `mailshift.progress` (plain Python), the HTML from
`mailshift.progress.html`. What lives here is Airflow glue:

* Authentication. Airflow mounts a plugin's FastAPI app WITHOUT its own authentication, so
  every route here depends on `require_user`: the caller's JWT is taken from
  `Authorization: Bearer` (REST clients) or the `_token` cookie (the Airflow UI keeps the
  logged-in user's JWT there; the nav entry embeds our pages in an iframe of the same origin,
  so the cookie comes along) and resolved by Airflow's own auth manager
  (`get_auth_manager().get_user_from_token`, the call `core_api.security.resolve_user_from_token`
  makes: signature, expiry, revocation). The user must then be allowed the website view
  (`is_authorized_view(AccessView.WEBSITE)`); DAG runs are shown only for DAGs the user may
  read. Anonymous or invalid: 401 JSON for API paths, a redirect to the Airflow login page
  (with `next`) for HTML pages.
* The mailshift database URL: Airflow connection `mailshift_db` (BaseHook) or MAILSHIFT_DB_URL
  (`mailshift.settings`).
* A background refresher thread (`mailshift.store.progress.refresh_changed`, every
  MAILSHIFT_PROGRESS_REFRESH_SECONDS, default 30, 0 = off; advisory-locked, so several
  api-server workers do not duplicate work).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from mailshift import settings
from mailshift.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "/mailshift"
COOKIE = "_token"
REFRESH_SECONDS = 30.0     # default of settings.PROGRESS_REFRESH_SECONDS


# -- database -----------------------------------------------------------------------------
_dsn: str | None = None
_local = threading.local()


def database_url() -> str:
    global _dsn
    if _dsn is None:
        url = None
        try:
            from airflow.sdk.bases.hook import BaseHook  # Airflow 3 task SDK

            url = BaseHook.get_connection("mailshift_db").get_uri()
        except Exception:  # noqa: BLE001 - fall back to the environment
            try:
                from airflow.hooks.base import BaseHook as _Hook

                url = _Hook.get_connection("mailshift_db").get_uri()
            except Exception:  # noqa: BLE001
                url = None
        if url and url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url and "__extra__" in url:
            url = url.split("?", 1)[0]
        _dsn = url or settings.db_url()     # ConfigError naming MAILSHIFT_DB_URL when neither is set
    return _dsn


def _conn():
    """One psycopg2 connection per worker thread (FastAPI runs sync work in a thread pool)."""
    from mailshift.store import db

    c = getattr(_local, "conn", None)
    if c is None or c.closed:
        c = db.connect(database_url(), application_name="mailshift-ui")
        _local.conn = c
    return c


async def _db(fn, *args):
    def run():
        try:
            return fn(_conn(), *args)
        except Exception:
            c = getattr(_local, "conn", None)
            if c is not None and not c.closed:
                try:
                    c.rollback()
                except Exception:  # noqa: BLE001
                    c.close()
            raise
    return await asyncio.to_thread(run)


# -- background refresh --------------------------------------------------------------------
_refresher_started = False
_refresher_lock = threading.Lock()


def _refresh_seconds() -> float:
    return settings.get_float(settings.PROGRESS_REFRESH_SECONDS, REFRESH_SECONDS)


def _refresher() -> None:
    from mailshift.store import db
    from mailshift.store import progress as store

    every = _refresh_seconds()
    conn = None
    while True:
        try:
            if conn is None or conn.closed:
                conn = db.connect(database_url(), application_name="mailshift-ui-refresh")
            store.refresh_changed(conn)
        except Exception:  # noqa: BLE001 - keep refreshing; log and retry
            log.exception("mailshift progress refresh failed")
            if conn is not None:
                conn.close()
            conn = None
        time.sleep(every)


def _start_refresher() -> None:
    global _refresher_started
    if _refresher_started:
        return
    try:
        if _refresh_seconds() <= 0:
            return
    except ConfigError:
        log.exception("mailshift progress refresh not started")
        return
    with _refresher_lock:
        if not _refresher_started:
            threading.Thread(target=_refresher, name="mailshift-progress-refresh", daemon=True).start()
            _refresher_started = True


# -- authentication ------------------------------------------------------------------------
class NotAuthenticated(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def _token_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return request.cookies.get(COOKIE) or None


async def require_user(request: Request):
    """The logged-in Airflow user, resolved and authorised by Airflow's auth manager."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

    token = _token_of(request)
    if not token:
        raise NotAuthenticated(401, "Not authenticated")
    try:
        user = await get_auth_manager().get_user_from_token(token)
    except Exception as exc:  # InvalidTokenError, ExpiredSignatureError, revoked, bad claims
        raise NotAuthenticated(401, f"Invalid or expired token ({type(exc).__name__})") from None
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=403, detail="Forbidden")
    _start_refresher()
    request.state.mailshift_user = user
    return user


def _username(user) -> str:
    try:
        return user.get_name()
    except Exception:  # noqa: BLE001
        return str(user)


def _base(request: Request) -> str:
    return request.scope.get("root_path", "") or PREFIX


# Every route requires a logged-in, authorised Airflow user (app-wide dependency: a route added
# later cannot forget it).
app = FastAPI(title="mailshift operator UI", docs_url=None, redoc_url=None, openapi_url=None,
              dependencies=[Depends(require_user)])


def _user(request: Request):
    return request.state.mailshift_user


@app.exception_handler(NotAuthenticated)
async def _not_authenticated(request: Request, exc: NotAuthenticated):
    path = request.url.path
    wants_json = "/api/" in path or "application/json" in request.headers.get("accept", "")
    if wants_json:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status,
                            headers={"WWW-Authenticate": "Bearer"})
    from airflow.api_fastapi.app import get_auth_manager

    nxt = str(request.url.path) + (("?" + request.url.query) if request.url.query else "")
    try:
        login = get_auth_manager().get_url_login(next_url=nxt)
    except Exception:  # noqa: BLE001
        login = "/auth/login?next=" + quote(nxt)
    return RedirectResponse(login, status_code=302)


#: our pages load nothing from elsewhere; only Airflow's own pages (same origin) may frame them
CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")


def _security_headers(response):
    response.headers["Cache-Control"] = "no-store"   # customer data: never cached
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _has_nul(request: Request) -> bool:
    raw = request.scope.get("raw_path") or b""
    return (b"\x00" in raw or b"%00" in raw.lower() or "\x00" in request.url.path
            or b"%00" in (request.scope.get("query_string") or b"") or "\x00" in str(request.query_params))


@app.middleware("http")
async def _no_store(request: Request, call_next):
    if _has_nul(request):     # PostgreSQL cannot hold a NUL: refuse before any route sees it
        return _security_headers(JSONResponse({"detail": "NUL byte in the request"}, status_code=400))
    return _security_headers(await call_next(request))


def _json(obj) -> JSONResponse:
    return JSONResponse(jsonable_encoder(obj))


# -- DAG runs and task logs (Airflow's metadata DB; only DAGs the user may read) ----------------
RUNS_SHOWN = 20
TASKS_SHOWN = 30
#: task states worth a link to the log on a page (the rest succeeded or did not start)
TASK_STATES_SHOWN = ("failed", "upstream_failed", "up_for_retry", "running", "queued", "deferred")


def _readable(dag_ids: list[str], user) -> list[str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return [d for d in dag_ids if get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=d), user=user)]


def _tasks_to_look_at(session, dag_id: str, run_id: str) -> list[dict]:
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import select

    rows = session.execute(select(TI.task_id, TI.map_index, TI.state, TI.try_number)
                           .where(TI.dag_id == dag_id, TI.run_id == run_id, TI.state.in_(TASK_STATES_SHOWN))
                           .order_by(TI.task_id, TI.map_index).limit(TASKS_SHOWN)).all()
    return [{"task_id": r[0], "map_index": r[1], "state": str(r[2]) if r[2] else None, "try_number": r[3]}
            for r in rows]


def dag_runs(dag_ids: list[str], user) -> list[dict] | None:
    """The latest runs of these DAGs (those the user may read), newest first; the newest run of
    each DAG carries the tasks worth opening the log of. None when Airflow cannot answer."""
    try:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        allowed = _readable(dag_ids, user)
        if not allowed:
            return []
        with create_session() as session:
            rows = session.execute(select(DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.start_date,
                                          DagRun.end_date).where(DagRun.dag_id.in_(allowed))
                                   .order_by(DagRun.id.desc()).limit(RUNS_SHOWN)).all()
            runs, seen = [], set()
            for r in rows:
                run = {"dag_id": r[0], "run_id": r[1], "state": str(r[2]) if r[2] else None,
                       "start_date": r[3], "end_date": r[4], "tasks": []}
                if r[0] not in seen:
                    seen.add(r[0])
                    run["tasks"] = _tasks_to_look_at(session, r[0], r[1])
                runs.append(run)
        return runs
    except Exception:  # noqa: BLE001 - the page must work without Airflow's runs
        log.exception("DAG runs of %s unavailable", dag_ids)
        return None


def _building_dags(building_id: str) -> list[str]:
    from mailshift.airflow.building import building_dag_id

    return [building_dag_id(building_id)]


def _wave_dags(wave_id: int) -> list[str]:
    from mailshift.airflow.factory import wave_dag_id

    return [wave_dag_id(wave_id)]


def _domain_dags(domain: str) -> list[str]:
    from mailshift.airflow.factory import cutover_dag_ids

    return cutover_dag_ids(domain)


# -- routes --------------------------------------------------------------------------------
@app.get("/", response_class=HTMLResponse)
async def overview_page(request: Request):
    from mailshift.progress import html, queries

    ov = await _db(queries.overview)
    return HTMLResponse(html.overview_html(ov, _base(request), _username(_user(request))))


@app.get("/api/overview")
async def overview_api(request: Request):
    from mailshift.progress import queries

    return _json(await _db(queries.overview))


@app.get("/buildings", response_class=HTMLResponse)
async def buildings_page(request: Request, state: str | None = None):
    from mailshift.progress import html, queries

    rows = await _db(queries.buildings, state)
    return HTMLResponse(html.buildings_html(rows, _base(request), _username(_user(request)), state))


@app.get("/building")
async def building_form(request: Request, id: str = ""):
    return RedirectResponse(f"{_base(request)}/building/{quote(id.strip())}", status_code=303)


@app.get("/building/{building_id}", response_class=HTMLResponse)
async def building_view(request: Request, building_id: str):
    from mailshift.progress import html, queries

    bp = await _db(queries.building_page, building_id)
    if bp is None:
        raise HTTPException(status_code=404, detail=f"no building {building_id}")
    runs = await asyncio.to_thread(dag_runs, _building_dags(building_id), _user(request))
    return HTMLResponse(html.building_html(bp, runs, _base(request), _username(_user(request))))


@app.get("/api/building/{building_id}")
async def building_api(request: Request, building_id: str):
    from mailshift.progress import queries

    bp = await _db(queries.building_page, building_id)
    if bp is None:
        raise HTTPException(status_code=404, detail=f"no building {building_id}")
    bp["dag_runs"] = await asyncio.to_thread(dag_runs, _building_dags(building_id), _user(request))
    return _json(bp)


async def _computing(request: Request, title: str) -> HTMLResponse | None:
    """The 'computing' page while no summary exists yet (the level pages read only summaries)."""
    from mailshift.progress import html, queries

    st = await _db(queries.summary_state)
    if st["summary_refreshed_at"] is not None:
        return None
    return HTMLResponse(html.computing_html(st, _base(request), _username(_user(request)), title))


async def _level(request: Request, fetch, key, dags, what: str) -> tuple[dict, list]:
    """A wave's or a domain's page data and its DAGs' runs; 404 naming it when unknown."""
    page = await _db(fetch, key)
    if page is None:
        raise HTTPException(status_code=404, detail=f"no {what} {key}")
    return page, await asyncio.to_thread(dag_runs, dags(key), _user(request))


@app.get("/wave/{wave_id}", response_class=HTMLResponse)
async def wave_view(request: Request, wave_id: int):
    from mailshift.progress import pages, queries

    if wait := await _computing(request, f"Wave {wave_id}"):
        return wait
    wp, runs = await _level(request, queries.wave_page, wave_id, _wave_dags, "wave")
    return HTMLResponse(pages.wave_html(wp, runs, _base(request), _username(_user(request))))


@app.get("/api/wave/{wave_id}")
async def wave_api(request: Request, wave_id: int):
    from mailshift.progress import queries

    wp, runs = await _level(request, queries.wave_page, wave_id, _wave_dags, "wave")
    return _json({**wp, "dag_runs": runs})


@app.get("/domains", response_class=HTMLResponse)
async def domains_view(request: Request):
    from mailshift.progress import pages, queries

    if wait := await _computing(request, "Domains"):
        return wait
    return HTMLResponse(pages.domains_html(await _db(queries.domains), _base(request), _username(_user(request))))


@app.get("/api/domains")
async def domains_api(request: Request):
    from mailshift.progress import queries

    return _json(await _db(queries.domains))


@app.get("/domain/{domain}", response_class=HTMLResponse)
async def domain_view(request: Request, domain: str):
    from mailshift.progress import pages, queries

    if wait := await _computing(request, f"Domain {domain}"):
        return wait
    dp, runs = await _level(request, queries.domain_page, domain, _domain_dags, "domain")
    return HTMLResponse(pages.domain_html(dp, runs, _base(request), _username(_user(request))))


@app.get("/api/domain/{domain}")
async def domain_api(request: Request, domain: str):
    from mailshift.progress import queries

    dp, runs = await _level(request, queries.domain_page, domain, _domain_dags, "domain")
    return _json({**dp, "dag_runs": runs})


def _map_filters(wave: str | None, system: str | None, state: str | None) -> dict:
    """The map's filters from the query string: empty means all; a wave is a number."""
    from mailshift.progress import queries

    wave = (wave or "").strip()
    if wave and not wave.isdigit():
        raise HTTPException(status_code=400, detail="wave must be a wave number")
    if state and state not in queries.BUILDING_STATES:
        raise HTTPException(status_code=400, detail=f"state must be one of {', '.join(queries.BUILDING_STATES)}")
    return {"wave": int(wave) if wave else None, "system": (system or "").strip() or None, "state": state or None}


@app.get("/map", response_class=HTMLResponse)
async def map_view(request: Request, wave: str | None = None, system: str | None = None, state: str | None = None):
    from mailshift.progress import pages, queries

    f = _map_filters(wave, system, state)
    if wait := await _computing(request, "Building map"):
        return wait
    m = await _db(lambda conn: queries.building_map(conn, **f))
    return HTMLResponse(pages.map_html(m, _base(request), _username(_user(request))))


@app.get("/api/map")
async def map_api(request: Request, wave: str | None = None, system: str | None = None, state: str | None = None):
    from mailshift.progress import queries

    f = _map_filters(wave, system, state)
    return _json(await _db(lambda conn: queries.building_map(conn, **f)))


@app.get("/report/{building_id}")
async def proof_report(building_id: str):
    from mailshift.progress import queries

    if "/" in building_id or building_id.startswith("."):
        raise HTTPException(status_code=404)
    path = queries.report_path(building_id)
    if path is None or Path(path).resolve().parent.parent != queries.reports_root().resolve():
        raise HTTPException(status_code=404, detail=f"no proof report for {building_id}")
    return FileResponse(path, media_type="text/html")


# -- support desk ----------------------------------------------------------------------------
PREFIX_SEARCHES_PER_MINUTE = 20
_searches: dict[str, list[float]] = {}
_searches_lock = threading.Lock()


def may_see_contact_details(user) -> bool:
    """Phone numbers and postal addresses: only for users Airflow lets read connections (roles
    Op and Admin of the simple auth manager; a FAB role with can_read on Connections). The
    support role (Viewer, User) sees what a call needs: household, mailboxes, migration, notices."""
    from airflow.api_fastapi.app import get_auth_manager

    try:
        return bool(get_auth_manager().is_authorized_connection(method="GET", user=user))
    except Exception:  # noqa: BLE001 - when in doubt, hide
        return False


def _rate_limited(user, q: str) -> bool:
    """A prefix search (3+ characters) counts; more than PREFIX_SEARCHES_PER_MINUTE a minute per
    user is refused (429): nobody pages through the customer base."""
    from mailshift.progress import queries

    if len(queries.normalise(q)) < queries.MIN_PREFIX:
        return False
    now, key = time.monotonic(), _username(user)
    with _searches_lock:
        recent = [t for t in _searches.get(key, []) if now - t < 60.0]
        limited = len(recent) >= PREFIX_SEARCHES_PER_MINUTE
        if not limited:
            recent.append(now)
        _searches[key] = recent
    return limited


async def _lookup(request: Request, q: str):
    from mailshift.progress import queries

    user = _user(request)
    if _rate_limited(user, q):
        raise HTTPException(status_code=429, detail=f"more than {PREFIX_SEARCHES_PER_MINUTE} searches a minute; "
                                                    "wait a minute", headers={"Retry-After": "60"})
    return await _db(lambda conn: queries.lookup(conn, q, contact_details=may_see_contact_details(user)))


@app.get("/lookup", response_class=HTMLResponse)
async def lookup_page(request: Request, q: str | None = None):
    from mailshift.progress import html

    res = await _lookup(request, q) if q else None
    return HTMLResponse(html.lookup_html(res, _base(request), _username(_user(request))))


@app.get("/api/lookup")
async def lookup_api(request: Request, q: str):
    return _json(await _lookup(request, q))


class MailshiftUIPlugin(AirflowPlugin):
    name = "mailshift_ui"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "mailshift operator UI"}]
    # an item of Airflow's main navigation (Airflow 3.3: `nav_top_level`; without it, and without a
    # category, the item would sit in a "Plugins" menu); the page is shown in an iframe at /plugin/mailshift
    external_views = [{"name": "Migration", "href": "mailshift/", "url_route": "mailshift",
                       "destination": "nav", "nav_top_level": True}]
