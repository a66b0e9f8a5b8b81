"""Serving benchmark: N conversations held in real time on one batched server vs N one-conversation servers.

For each N (`--sessions 1 2 4`), same run, two ways:
- `batched`: one server process with `max_sessions = N` (one DuplexSession of N rows, one step per 80 ms for all);
- `separate`: N server processes with `max_sessions = 1` each (the reference's way: one conversation per process).
Every server runs with one torch thread (`--threads`, pinned: intra-op 1, inter-op 1, OMP_NUM_THREADS), the
model is small (a tiny LM and a tiny-width Mimi with Kyutai's SEANet ratios, so 80 ms frames as in the released
model), and the clients (this process, `openmoshi.client.talk_file`) send a recording paced in real time, as
people talk, started 37 ms apart (real users are not in phase). A short warm-up conversation per server comes
first and is not counted.

Measured, per conversation and pooled:
- frame latency, the issue's definition: from a user's frame arriving at the server (its Opus page decoded into
  the conversation's input) to Moshi's frame for the step that consumed it leaving the engine for the connection
  (handed to the event loop, which then Opus-encodes and writes it). Each server process is instrumented for this
  with a subclass of the server's `Engine` (bench only: the server's code is not changed);
- steps that started late (the server fell behind real time) and the step time, from /api/status;
- CPU per conversation: the server processes' CPU time (all threads) over the measured window, divided by the
  wall time and by N (1.0 = one core busy all the time); and per real-time conversation: that CPU time divided by
  the conversation-seconds actually stepped (steps x 80 ms), i.e. the cores one conversation needs to be held in
  real time, a figure that stays meaningful when a busy machine makes a run fall behind.

The model: by default the server tests' tiny model; `--nano` builds nanomoshi's architecture with random weights
(`openmoshi.testing.nano_model`: speed does not depend on the weights), `--model FOLDER` takes any model folder.
`--modes batched` skips the one-process-per-conversation comparison. `--check-realtime` ends the report with one
line per N: "every frame within 80 ms: yes/no", yes when every step of the batched server (the compute of one
frame for all N conversations) took at most one frame (80 ms), no step started late and no input frame was
dropped. (The frame latency above also holds the wait of a frame in its conversation's queue until the next
step, up to one frame by design, so it is reported but not the criterion.)

`--compile` and `--model-process` (each off, on or both) measure the server's step through torch.compile and in
its own process (serve's flags of the same names); the CPU figures then include the model process's CPU.

Run: nice -n 10 .venv/bin/python bench/serve.py [--sessions 1 2 4] [--seconds 4] [--threads 1] [--device cpu]
     [--nano | --model FOLDER] [--modes batched separate] [--compile off|on|both] [--model-process off|on|both]
     [--check-realtime] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAME_MS = 80.0


def build_repo(folder: Path, seed: int = 0, nano: bool = False) -> Path:
    """The model in Kyutai's folder layout (random weights): the server tests' tiny 80 ms-frame model, or
    nanomoshi's architecture (`nano`)."""
    if nano:
        from openmoshi.testing.nano_model import build_nano_repo

        return build_nano_repo(folder, seed)
    from openmoshi.testing.server_model import build_server_repo

    return build_server_repo(folder, seed)


# ---- worker: one server process, its engine instrumented -------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    from openmoshi.commands.common import apply_threads, configure_threading_env

    configure_threading_env()
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")  # to the log read by `Server`
    from aiohttp import web

    from openmoshi.inference.models import load_models, resolve_model_files
    from openmoshi.server import engine as engine_mod
    from openmoshi.server.app import build_app
    from openmoshi.server.config import EngineConfig, ServerConfig
    from openmoshi.server.runner import serve_forever

    apply_threads(args.threads[0])
    models = load_models(resolve_model_files(args.repo), args.device)
    latencies: dict[int, list[float]] = collections.defaultdict(list)
    step_s: list[float] = []  # the measured window's step times (the model's compute of one frame for all rows)
    events: list[tuple] = []  # the measured window's timeline: ("step" | "apply", start s, ms, joins, leaves)
    convs: dict[int, object] = {}  # conversations measured (opened after the last reset)
    first_id = [0]

    class TimedEngine(engine_mod.Engine):
        """Stamps each user frame's arrival, which step consumed it, and when that step's output left."""

        def push_audio(self, conv, pcm) -> None:
            with self._cond:  # re-entrant: the worker cannot pop the new frames before they are stamped
                before_in, before_drop = conv.frames_in, conv.dropped_in
                super().push_audio(conv, pcm)
                if conv.id >= first_id[0]:
                    convs[conv.id] = conv
                arrivals = conv.__dict__.setdefault("bench_arrivals", collections.deque())
                arrivals.extend([time.perf_counter()] * (conv.frames_in - before_in))
                for _ in range(conv.dropped_in - before_drop):  # the engine dropped the oldest frames
                    arrivals.popleft()

        def _step(self, frames) -> None:
            self.bench_stamps = [(conv.id, conv.__dict__["bench_arrivals"].popleft())
                                 for row, conv in self._active.items() if frames.get(row) is not None]
            start = time.perf_counter()
            super()._step(frames)
            step_s.append(time.perf_counter() - start)
            events.append(("step", start, (time.perf_counter() - start) * 1000, 0, 0))

        def _apply(self, joining, leaving) -> None:
            start = time.perf_counter()
            super()._apply(joining, leaving)
            events.append(("apply", start, (time.perf_counter() - start) * 1000, len(joining), len(leaving)))

        def _post(self, fn, *args) -> None:
            if fn is engine_mod.deliver:
                stamps, deliver = self.bench_stamps, fn

                def deliver_and_stamp(*a) -> None:
                    now = time.perf_counter()
                    for conv_id, arrived in stamps:
                        if conv_id >= first_id[0]:  # not the warm-up's last frames
                            latencies[conv_id].append(now - arrived)
                    deliver(*a)

                fn = deliver_and_stamp
            super()._post(fn, *args)

    config = ServerConfig(host="127.0.0.1", port=args.port, model_name="bench-small", handshake_timeout=60.0,
                          engine=EngineConfig(max_sessions=args.max_sessions, seed=1, compile=args.compile == "on",
                                              model_process=args.model_process == "on"))
    engine = TimedEngine(models.mimi, models.lm, models.tokenizer, config.engine)
    app = build_app(models.mimi, models.lm, models.tokenizer, config, engine=engine)

    def cpu_s() -> float:
        """This process's CPU time plus its model process's (`--model-process`), from /proc."""
        pid = getattr(engine.session, "pid", None)
        child = 0.0
        if pid is not None:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                child = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
            except (OSError, IndexError, ValueError):
                pass
        return time.process_time() + child

    async def stats(_request):
        return web.json_response({
            "cpu_s": cpu_s(), "latency_s": {str(k): v for k, v in latencies.items()},
            "dropped_in": sum(c.dropped_in for c in convs.values()),
            "silence_fills": sum(c.silence_fills for c in convs.values()),
            "steps": sum(c.steps for c in convs.values()), "step_s": step_s,
            "stalls": stalls(events, engine.period)})

    async def reset(_request):
        logging.getLogger("openmoshi.server").warning("bench: measuring from here (behind real time before: warm-up)")
        latencies.clear()
        step_s.clear()
        events.clear()
        convs.clear()
        first_id[0] = engine.opened + 1  # conversation ids count from 1 in opening order
        return web.json_response({"cpu_s": cpu_s()})

    app.router.add_get("/bench/stats", stats)
    app.router.add_post("/bench/reset", reset)
    asyncio.run(serve_forever(app, "127.0.0.1", args.port, None, lambda port: print("READY", port, flush=True)))


def stalls(events: list[tuple], period: float) -> list[str]:
    """Where the steps slipped more than one period (the engine's "late"): the steps and joins/leaves of the
    half second before each such step, as text (ms relative to that step's start)."""
    out = []
    starts = [e[1] for e in events if e[0] == "step"]
    for prev, cur in zip(starts, starts[1:], strict=False):
        if cur - prev > 2 * period:
            before = [f"{e[0]} {1000 * (e[1] - cur):+.0f} ms: {e[2]:.1f} ms" + (f" ({e[3]} joins, {e[4]} leaves)"
                                                                              if e[0] == "apply" else "")
                      for e in events if cur - 0.5 <= e[1] <= cur and (e[0] == "step" or e[3] or e[4])]
            out.append("; ".join(before))
    return out[:3]


# ---- parent: servers, clients, report ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(url: str, method: str = "GET") -> dict:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


class Server:
    def __init__(self, repo: Path, max_sessions: int, threads: int, device: str, compile: bool = False,
                 process: bool = False) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile("w+")  # the server's log: its "behind real time" lines are reported
        env = {**os.environ, "NO_TORCH_COMPILE": "1", "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "--repo", str(repo), "--port",
                                      str(self.port), "--max-sessions", str(max_sessions), "--threads", str(threads),
                                      "--device", device, "--compile", "on" if compile else "off",
                                      "--model-process", "on" if process else "off"],
                                     env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def wait_ready(self) -> None:
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"bench server did not start (exit {self.proc.poll()})")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.seek(0)
        self.behind = [line.strip() for line in self.log if "behind real time" in line or "bench:" in line]
        self.log.close()


def recording(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 24000)) / 24000
    return (0.2 * np.sin(2 * np.pi * (180 + 40 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


async def converse_all(urls: list[str], seconds: float) -> list:
    from openmoshi.client import Options, talk_file

    options = Options(timeout=120.0, tail_seconds=0.24)

    async def one(i: int, url: str):
        await asyncio.sleep(0.037 * i)
        return await talk_file(url, recording(seconds, i), options)

    return await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))


def measure(repo: Path, n: int, mode: str, seconds: float, threads: int, device: str, compile: bool = False,
            process: bool = False) -> dict:
    servers = ([Server(repo, n, threads, device, compile, process)] if mode == "batched"
               else [Server(repo, 1, threads, device, compile, process) for _ in range(n)])
    try:
        for s in servers:
            s.wait_ready()
        asyncio.run(converse_all([f"ws://127.0.0.1:{s.port}/api/chat" for s in servers], 1.0))  # warm-up
        deadline = time.monotonic() + 30  # its row free again before N new conversations arrive
        while any(http(s.base + "/api/status")["sessions_in_use"] for s in servers) and time.monotonic() < deadline:
            time.sleep(0.05)
        before = [http(s.base + "/bench/reset", "POST")["cpu_s"] for s in servers]
        late_before = [http(s.base + "/api/status")["late_steps"] for s in servers]
        urls = [f"ws://127.0.0.1:{servers[0 if mode == 'batched' else i].port}/api/chat" for i in range(n)]
        start = time.perf_counter()
        recs = asyncio.run(converse_all(urls, seconds))
        wall = time.perf_counter() - start
        stats = [http(s.base + "/bench/stats") for s in servers]
        status = [http(s.base + "/api/status") for s in servers]
    finally:
        for s in servers:
            s.stop()
    cpu = sum(st["cpu_s"] - b for st, b in zip(stats, before, strict=True))
    per_conv = [np.asarray(v) * 1000 for st in stats for v in st["latency_s"].values()]
    pooled = np.concatenate(per_conv) if per_conv else np.zeros(0)
    steps_ms = np.asarray([t for st in stats for t in st["step_s"]]) * 1000
    return {
        "sessions": n, "mode": mode + (" compiled" if compile else "") + (" model-process" if process else ""),
        "processes": len(servers),
        "conversations": len(per_conv),
        "frames": int(pooled.size), "wall_s": round(wall, 2),
        "latency_ms": {"median": round(float(np.median(pooled)), 1), "p99": round(float(np.percentile(pooled, 99)), 1)},
        "worst_conversation_p99_ms": round(max(float(np.percentile(v, 99)) for v in per_conv), 1),
        "late_steps": sum(s["late_steps"] for s in status) - sum(late_before),
        "input_frames_dropped": sum(st["dropped_in"] for st in stats),
        "silence_filled_steps": sum(st["silence_fills"] for st in stats),
        "conversation_steps": sum(st["steps"] for st in stats),
        "step_ms_p50": [s["step_time_ms"]["p50"] for s in status],
        "step_ms": {k: round(float(f(steps_ms)), 1) if steps_ms.size else float("nan") for k, f in
                    (("median", np.median), ("p99", lambda a: np.percentile(a, 99)), ("max", np.max))},
        "latency_max_ms": round(float(pooled.max()), 1) if pooled.size else float("nan"),
        "cpu_cores_per_conversation": round(cpu / wall / n, 3),
        # the CPU one conversation-second of audio cost: what holding a conversation in real time needs in cores,
        # whether or not this run kept up (a run that fell behind stepped less than it should have)
        "cpu_cores_per_realtime_conversation": round(cpu / (sum(st["steps"] for st in stats) * 0.08), 3),
        "cpu_s": round(cpu, 2),
        "behind_log": [line for s in servers for line in s.behind][:4],  # the servers' own "behind" warnings
        "stalls": [x for st in stats for x in st["stalls"]],
        "frames_received": [r.frames_received for r in recs], "frames_sent": [r.frames_sent for r in recs],
    }


def realtime(row: dict) -> bool:
    """Every step within one frame, none started late, no user frame dropped."""
    # (a run without steps has a NaN max: not real time)
    return row["step_ms"]["max"] <= FRAME_MS and row["late_steps"] == 0 and row["input_frames_dropped"] == 0


def realtime_line(row: dict) -> str:
    return (f"{row['sessions']} conversations, {row['mode']}, {row['threads']} thread(s): "
            f"every frame within {FRAME_MS:.0f} ms: "
            f"{'yes' if realtime(row) else 'no'} (step median {row['step_ms']['median']:.1f} / p99 "
            f"{row['step_ms']['p99']:.1f} / max {row['step_ms']['max']:.1f} ms, {row['late_steps']} late steps, "
            f"{row['input_frames_dropped']} input frames dropped; frame latency p99 {row['latency_ms']['p99']:.0f} ms "
            f"with the queueing)")


def markdown(rows: list[dict]) -> str:
    out = ["| conversations | server | threads | frame latency median / p99 (ms) | worst conversation's p99 (ms) | "
           "late steps | step median / p99 / max (ms) | CPU per conversation (cores) | CPU per real-time "
           "conversation (cores) |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        server = (f"1 batched process{r['mode'][len('batched'):]}" if r["mode"].startswith("batched")
                  else f"{r['processes']} processes{r['mode'][len('separate'):]}")
        steps = f"{r['step_ms']['median']:.0f} / {r['step_ms']['p99']:.0f} / {r['step_ms']['max']:.0f}"
        out.append(f"| {r['sessions']} | {server} | {r['threads']} | {r['latency_ms']['median']:.0f} / "
                   f"{r['latency_ms']['p99']:.0f} | {r['worst_conversation_p99_ms']:.0f} | {r['late_steps']} | "
                   f"{steps} | "
                   f"{r['cpu_cores_per_conversation']:.2f} | {r['cpu_cores_per_realtime_conversation']:.2f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured conversation")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch threads per server process (several: one run each)")
    parser.add_argument("--device", default="cpu", help="the servers' device (cpu, cuda, cuda:N)")
    parser.add_argument("--json", default=None, help="write the results here too")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--nano", action="store_true", help="nanomoshi's architecture with random weights")
    model.add_argument("--model", default=None, metavar="FOLDER", help="a model folder in Kyutai's layout")
    parser.add_argument("--modes", nargs="+", choices=["batched", "separate"], default=["batched", "separate"],
                        help="batched: one server for N conversations; separate: N one-conversation servers")
    parser.add_argument("--check-realtime", action="store_true",
                        help="end with one line per batched run: every frame within 80 ms: yes/no")
    parser.add_argument("--compile", choices=["off", "on", "both"], default="off",
                        help="the servers' step through torch.compile (serve --compile): off, on, or both (each "
                             "measurement eager then compiled; the compilation happens before the measurement)")
    parser.add_argument("--model-process", choices=["off", "on", "both"], default="off",
                        help="the servers' model step in its own process (serve --model-process): off, on, or both "
                             "(each measurement in the server's thread then in a model process)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-sessions", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    if args.worker:
        worker(args)
        return
    if args.model is not None and not Path(args.model, "config.json").is_file():
        parser.error(f"--model {args.model}: not a model folder (no config.json)")
    rows = []
    choices = {"off": [False], "on": [True], "both": [False, True]}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(args.model).resolve() if args.model else build_repo(Path(tmp) / "model", nano=args.nano)
        for threads, n in ((t, n) for t in args.threads for n in args.sessions):
            for mode in [m for m in args.modes if n > 1 or m == "batched"]:
                for compile, process in ((c, p) for c in choices[args.compile] for p in choices[args.model_process]):
                    row = {"threads": threads, **measure(repo, n, mode, args.seconds, threads, args.device, compile,
                                                         process)}
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    rows.append(row)
    print(markdown(rows))
    if args.check_realtime:
        for row in rows:
            if row["mode"].startswith("batched"):
                print(realtime_line(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
