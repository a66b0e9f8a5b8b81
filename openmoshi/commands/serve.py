"""`openmoshi serve`: Moshi for browsers and clients over Kyutai's websocket protocol (docs/server.md).

One model instance serves `--max-sessions` conversations at once (openmoshi/server/engine.py); the web page is
at `/`, the websocket at `/api/chat`, `/api/health` and `/api/status` are for load balancers and monitoring.
Flags are checked before the model loads; the library gets a `ServerConfig`, never the Namespace. torch is
imported only in `main`, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..inference.models import add_model_arguments
from ..server.config import TOKEN_ENV
from . import common
from .chat import add_sampling_arguments
from .common import error

log = logging.getLogger("openmoshi.server")


def _port(text: str) -> int:
    value = common.non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    common.add_threads_argument(parser)
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    net.add_argument("--port", type=_port, default=8998, help="TCP port (default 8998; 0: any free port)")
    net.add_argument("--token", default=None,
                     help=f"every websocket must present this token (query token=... or an Authorization: Bearer "
                          f"header); default: the {TOKEN_ENV} environment variable, else none")
    net.add_argument("--ssl-cert", default=None, metavar="PEM", help="HTTPS: the certificate (with --ssl-key)")
    net.add_argument("--ssl-key", default=None, metavar="PEM", help="HTTPS: the private key")
    net.add_argument("--ssl-self-signed", action="store_true",
                     help="HTTPS with a self-signed certificate made for this machine (a LAN demo: browsers give "
                          "the microphone only to HTTPS or localhost pages)")
    net.add_argument("--static", default=None, metavar="DIR",
                     help="serve the web page from this folder instead of the package's")
    srv = parser.add_argument_group("conversations")
    srv.add_argument("--max-sessions", type=common.positive_int, default=None, metavar="N",
                     help="conversations at once (default: what fits in memory and in real time, measured at start "
                          "and stated in the log)")
    srv.add_argument("--step-ms", type=common.non_negative_float, default=None, metavar="MS",
                     help="milliseconds between steps (default: the model's frame, 80; 0: as fast as possible, "
                          "for benchmarks)")
    srv.add_argument("--drain-timeout", type=common.non_negative_float, default=300.0, metavar="SECONDS",
                     help="on SIGTERM, take no new conversations and wait this long at most for the open ones to "
                          "end (default 300)")
    srv.add_argument("--compile", action="store_true",
                     help="run the step through torch.compile (same results, faster on CPU; compiles at start: "
                          "minutes the first time, then cached on disk; see docs/runtime.md)")
    srv.add_argument("--model-process", action=argparse.BooleanOptionalAction, default=None,
                     help="run the model step in its own process, apart from the GIL of the server's event loop "
                          "(Opus, websockets), which then overlaps the step on another core (default: on when the "
                          "model is on the CPU, off on an accelerator; see docs/server.md)")
    srv.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                     help="logging level (default info: one line per connection opened and closed)")
    add_sampling_arguments(parser)


def check_args(args: argparse.Namespace) -> str | None:
    if (args.ssl_cert is None) != (args.ssl_key is None):
        return "--ssl-cert and --ssl-key go together"
    if args.ssl_self_signed and args.ssl_cert is not None:
        return "--ssl-self-signed makes its own certificate: drop --ssl-cert/--ssl-key, or drop --ssl-self-signed"
    if args.token is not None and not args.token.strip():
        return "--token must not be empty"
    if args.static is not None and not os.path.isdir(args.static):
        return f"--static: no such folder: {args.static}"
    if args.device is not None:
        try:
            common.device(args.device)
        except argparse.ArgumentTypeError as err:
            return f"--device: {err}"
    return None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(args: argparse.Namespace) -> int:
    problem = check_args(args)
    if problem:
        return error(problem, 2)
    setup_logging(args.log_level)
    from pathlib import Path

    from ..server.tls import TLSError, self_signed, ssl_context

    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    try:
        if args.ssl_self_signed:
            cert, key, fingerprint = self_signed(args.host)
            ctx = ssl_context(cert, key)
            log.info("self-signed certificate %s (SHA-256 %s)", cert, fingerprint)
        elif args.ssl_cert is not None:
            ctx = ssl_context(args.ssl_cert, args.ssl_key)
        else:
            ctx = None
    except (TLSError, OSError) as err:
        return error(str(err))

    from ..inference.models import ModelFilesError, models_from_args

    threads = common.apply_threads(args.threads)
    try:
        models = models_from_args(args)
    except (ModelFilesError, ValueError) as err:
        return error(str(err))
    if models.mimi.sample_rate != 24_000:
        return error(f"the wire protocol carries 24 kHz Opus; this model's Mimi runs at {models.mimi.sample_rate} Hz")
    return run(args, models, token, ctx, threads, Path(args.static) if args.static else None)


def model_process_default(device: str) -> bool:
    """`--model-process` unless told: on for a CPU model (the step and the event loop then use both cores instead
    of taking turns on the GIL: docs/nanomoshi_realtime.md), off on an accelerator (the step there is mostly
    waiting on the device, which releases the GIL; a second process would only add a round trip)."""
    return device.startswith("cpu")


def run(args: argparse.Namespace, models, token: str | None, ctx, threads: int, static) -> int:
    import asyncio

    from ..server.app import build_app
    from ..server.capacity import estimate
    from ..server.config import EngineConfig, ServerConfig
    from ..server.runner import serve_forever
    from .chat import sampling_configs

    if args.max_sessions is None:
        cap = estimate(models.mimi, models.lm)
        sessions = cap.sessions
        log.info("max sessions: %d (what fits: %s; --max-sessions N overrides)", sessions, cap.reason)
        if args.compile:
            log.info("the estimate timed the eager step: with --compile more may fit (--max-sessions N)")
    else:
        sessions = args.max_sessions
        log.info("max sessions: %d (--max-sessions)", sessions)
    text_cfg, audio_cfg = sampling_configs(args, models.files.repo_config.lm_gen_config)
    process = model_process_default(str(models.device)) if args.model_process is None else args.model_process
    engine = EngineConfig(max_sessions=sessions, step_period=None if args.step_ms is None else args.step_ms / 1000,
                          text_sampling=text_cfg, audio_sampling=audio_cfg, seed=args.seed, compile=args.compile,
                          model_process=process)
    config = ServerConfig(host=args.host, port=args.port, token=token, model_name=models.files.source,
                          static_dir=static, engine=engine)
    app = build_app(models.mimi, models.lm, models.tokenizer, config)
    scheme = "https" if ctx else "http"

    def started(port: int) -> None:
        shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
        log.info("openmoshi serve: %s on %s (%s), %d conversations, %d threads; web page %s://%s:%d/, websocket "
                 "/api/chat%s", models.files.source, models.device, str(models.dtype).replace("torch.", ""),
                 sessions, threads, scheme, shown, port, ", token required" if token else "")

    try:
        asyncio.run(serve_forever(app, args.host, args.port, ctx, started, args.drain_timeout))
    except KeyboardInterrupt:
        log.info("stopped")
    except OSError as err:
        return error(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}")
    return 0
