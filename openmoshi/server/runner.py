"""Putting the app on a socket: `serve_forever` for the command, `BackgroundServer` for tests, benchmarks and
programs that embed a server (its own event loop in a thread; `with BackgroundServer(...) as srv: srv.url`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import threading

from aiohttp import web

from .app import ENGINE, build_app
from .config import ServerConfig

log = logging.getLogger("openmoshi.server")


async def start_site(app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
                     ) -> tuple[web.AppRunner, int]:
    """Start serving `app` on host:port (0: a free port); returns the runner (`await runner.cleanup()` stops it)
    and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple):
            bound = address[1]
            break
    return runner, bound


async def serve_forever(app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                        started=None, drain_timeout: float = 300.0) -> None:
    """Serve until cancelled (Ctrl-C in the command) or drained. `started(port)` is called once the socket listens.

    SIGTERM drains: no new conversations (/api/health answers 503, new clients get "server draining"), the open
    ones go on; the server exits when the last one ends, or after `drain_timeout` seconds (those left get "the
    server is shutting down").
    """
    runner, bound = await start_site(app, host, port, ssl_context)
    loop = asyncio.get_running_loop()
    drained = asyncio.Event()
    engine = app[ENGINE]

    async def drain() -> None:
        engine.drain()
        log.info("SIGTERM: draining (%d conversations open, at most %g s)",
                 engine.stats()["sessions_in_use"], drain_timeout)
        deadline = loop.time() + drain_timeout
        while engine.stats()["sessions_in_use"] and loop.time() < deadline:
            await asyncio.sleep(0.2)
        log.info("drained" if not engine.stats()["sessions_in_use"] else "drain timeout: closing what is left")
        drained.set()

    tasks: set[asyncio.Task] = set()

    def on_term() -> None:
        if not engine.draining:
            task = loop.create_task(drain())
            tasks.add(task)  # a reference until it ends

    try:
        loop.add_signal_handler(signal.SIGTERM, on_term)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not on this platform
        pass
    try:
        if started is not None:
            started(bound)
        await drained.wait()
    finally:
        try:
            loop.remove_signal_handler(signal.SIGTERM)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        await runner.cleanup()


class BackgroundServer:
    """A server on its own event loop in a daemon thread (port 0: a free one).

    `BackgroundServer(models.mimi, models.lm, models.tokenizer, ServerConfig(...))` or with `app=` an app built
    already. Attributes once started: `url` (http://host:port), `ws_url` (ws://host:port/api/chat), `port`,
    `engine`, `app`, `loop`. `stop()` closes every conversation (error kind, then close) and joins the thread.
    """

    def __init__(self, mimi=None, lm=None, tokenizer=None, config: ServerConfig | None = None,
                 app: web.Application | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config or ServerConfig(port=0)
        self.app = app if app is not None else build_app(mimi, lm, tokenizer, self.config)
        self.engine = self.app[ENGINE]
        self.ssl_context = ssl_context
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://{self.config.host}:{self.port}/api/chat"

    def start(self) -> BackgroundServer:
        self._thread = threading.Thread(target=self._main, name="openmoshi-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self._runner, self.port = self.loop.run_until_complete(
                start_site(self.app, self.config.host, self.config.port, self.ssl_context))
        except BaseException as err:  # reported to start()
            self._error = err
            self._ready.set()
            self.loop.close()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    def call(self, coro, timeout: float = 30.0):
        """Run a coroutine on the server's loop from another thread; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread is None:
            return
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(60)
        self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
