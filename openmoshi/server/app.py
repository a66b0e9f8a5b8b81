"""The aiohttp application of `openmoshi serve`: routes, shared state, startup and shutdown.

Routes: `GET /api/chat` (the websocket, connection.py), `GET /api/health` (200 "ok" while the engine runs, 503
otherwise or while draining: for load balancers), `GET /api/status` (JSON: sessions in use and free, step-time
percentiles, the model), `GET /` (the web page, openmoshi/server/static/index.html) and the page's other files at
`/static/...` or at the top level (`/app.js`).

`build_app(mimi, lm, tokenizer, config)` builds everything from loaded models and a `ServerConfig`, with no port:
tests drive it with aiohttp's test client; `runner.py` puts it on a socket. The engine's worker thread starts
with the app and stops with it (after every open websocket was closed with the error kind).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from .config import ServerConfig
from .connection import ChatConnection
from .engine import Engine

log = logging.getLogger("openmoshi.server")

STATIC_DIR = Path(__file__).with_name("static")
ENGINE = web.AppKey("engine", Engine)
CONFIG = web.AppKey("config", ServerConfig)
STATE = web.AppKey("state", dict)

FALLBACK_PAGE = """<!doctype html><meta charset="utf-8"><title>openmoshi</title>
<p>openmoshi server: the web page is not installed in this package. The websocket is at <code>/api/chat</code>;
<code>/api/status</code> tells how it is doing.</p>
"""


def build_app(mimi, lm, tokenizer, config: ServerConfig, engine: Engine | None = None) -> web.Application:
    """The application over one model instance (`engine`: an Engine to use instead of building one)."""
    app = web.Application(client_max_size=1 << 20)
    app[CONFIG] = config
    app[ENGINE] = engine if engine is not None else Engine(mimi, lm, tokenizer, config.engine)
    app[STATE] = {"tokenizer": tokenizer, "connections": set(), "started": time.monotonic(), "pool": None,
                  "refused": 0}
    app.router.add_get("/api/chat", _chat)
    app.router.add_get("/api/health", _health)
    app.router.add_get("/api/status", _status)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{path:.+}", _static)
    app.router.add_get("/{path:[^/]+}", _static)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


async def _startup(app: web.Application) -> None:
    app[STATE]["pool"] = ThreadPoolExecutor(max(1, app[CONFIG].codec_threads), thread_name_prefix="openmoshi-opus")
    app[ENGINE].start(asyncio.get_running_loop())


async def _shutdown(app: web.Application) -> None:
    tasks = list(app[STATE]["connections"])
    for task in tasks:
        task.cancel()  # each connection sends "the server is shutting down" and closes
    if tasks:
        await asyncio.wait(tasks, timeout=10)


async def _cleanup(app: web.Application) -> None:
    await asyncio.get_running_loop().run_in_executor(None, app[ENGINE].stop)
    pool = app[STATE]["pool"]
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


async def _chat(request: web.Request) -> web.StreamResponse:
    app = request.app
    conn = ChatConnection(request, app[ENGINE], app[CONFIG], app[STATE]["tokenizer"], app[STATE]["pool"])
    task = asyncio.current_task()
    app[STATE]["connections"].add(task)
    try:
        return await conn.run()
    finally:
        app[STATE]["connections"].discard(task)


async def _health(request: web.Request) -> web.Response:
    if request.app[ENGINE].draining:
        return web.Response(status=503, text="draining\n")
    if request.app[ENGINE].running:
        return web.Response(text="ok\n")
    return web.Response(status=503, text="engine not running\n")


async def _status(request: web.Request) -> web.Response:
    app = request.app
    stats = app[ENGINE].stats()
    return web.json_response({
        "model": app[CONFIG].model_name,
        "alive": app[ENGINE].running,
        "uptime_s": round(time.monotonic() - app[STATE]["started"], 3),
        "connections": len(app[STATE]["connections"]),
        **stats,
    })


def _static_dir(app: web.Application) -> Path:
    return app[CONFIG].static_dir or STATIC_DIR


async def _index(request: web.Request) -> web.StreamResponse:
    page = _static_dir(request.app) / "index.html"
    if page.is_file():
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})
    return web.Response(text=FALLBACK_PAGE, content_type="text/html")


async def _static(request: web.Request) -> web.StreamResponse:
    root = _static_dir(request.app).resolve()
    target = (root / request.match_info["path"]).resolve()
    if root not in target.parents or not target.is_file():  # nothing outside the folder, no listings
        raise web.HTTPNotFound()
    return web.FileResponse(target, headers={"Cache-Control": "no-cache"})
