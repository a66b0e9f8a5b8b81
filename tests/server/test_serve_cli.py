"""`openmoshi serve` as a user runs it: flag errors before anything loads, and a real process over HTTPS with a
self-signed certificate and a token (log lines, health, a conversation's handshake, draining on SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from openmoshi import cli
from openmoshi.server import protocol

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv, message", [
    (["--ssl-cert", "a.pem"], "--ssl-cert and --ssl-key go together"),
    (["--ssl-self-signed", "--ssl-cert", "a", "--ssl-key", "b"], "--ssl-self-signed makes its own certificate"),
    (["--token", " "], "--token must not be empty"),
    (["--static", "/nonexistent/folder"], "--static: no such folder"),
    (["--ssl-cert", "/nonexistent.pem", "--ssl-key", "/nonexistent.key"], "TLS certificate not found"),
])
def test_flag_errors_come_before_the_model(argv, message, capsys):
    code = cli.main(["serve", "--model", "/nonexistent/model", *argv])
    assert code != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--port", "70000"], ["--port", "-1"], ["--max-sessions", "0"]])
def test_bad_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", *argv])
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def test_missing_model_is_a_clean_error(tmp_path, capsys):
    assert cli.main(["serve", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model files missing") and "Traceback" not in err


def test_a_real_server_over_https_with_a_token(server_repo, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "OPENMOSHI_TOKEN": "t0ken",
           "NO_TORCH_COMPILE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "openmoshi.cli", "serve", "--model", str(server_repo),
                             "--port", "0", "--ssl-self-signed", "--threads", "1"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "openmoshi serve:" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(120), "".join(lines)
        log = "".join(lines)
        port = int(re.search(r"web page https://localhost:(\d+)/", log).group(1))
        model_pid = int(re.search(r"model step in its own process \(pid (\d+)\)", log).group(1))  # the CPU default
        assert re.search(r"max sessions: \d+ \(what fits: a step takes", log)
        assert "token required" in log and "self-signed certificate" in log
        (cert,) = (tmp_path / "cache" / "openmoshi" / "tls").glob("*.crt")
        ctx = ssl.create_default_context(cafile=str(cert))
        assert urllib.request.urlopen(f"https://localhost:{port}/api/health", context=ctx, timeout=30).read() == b"ok\n"

        async def chat(token: str | None):
            url = f"wss://localhost:{port}/api/chat" + (f"?token={token}" if token else "")
            async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=ctx) as ws:
                msg = await asyncio.wait_for(ws.receive(), 60)
                return protocol.decode(msg.data)

        assert asyncio.run(chat("t0ken")).kind is protocol.Kind.HANDSHAKE
        refused = asyncio.run(chat(None))
        assert refused.kind is protocol.Kind.ERROR and refused.data == "unauthorized: missing or wrong token"

        def health() -> int:
            try:
                return urllib.request.urlopen(f"https://localhost:{port}/api/health", context=ctx, timeout=30).status
            except urllib.error.HTTPError as err:
                return err.code

        async def drain():  # SIGTERM with a conversation open: no new ones, the open one goes on, then exit
            url = f"wss://localhost:{port}/api/chat?token=t0ken"
            async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=ctx) as held:
                assert (await asyncio.wait_for(held.receive(), 60)).data == b"\x00"
                proc.send_signal(signal.SIGTERM)
                loop = asyncio.get_running_loop()
                for _ in range(300):
                    if await loop.run_in_executor(None, health) == 503:
                        break
                    await asyncio.sleep(0.1)
                refused = await chat("t0ken")
                assert refused.kind is protocol.Kind.ERROR and refused.data.startswith("server draining")
                assert proc.poll() is None and not held.closed

        asyncio.run(drain())
        assert proc.wait(60) == 0
        reader.join(10)
        log = "".join(lines)
        assert re.search(r"conversation 1 from 127\.0\.0\.1 closed after [\d.]+ s: the client closed", log)
        assert "refused: missing or wrong token" in log and "SIGTERM: draining (1 conversations open" in log
        assert "drained" in log and "Traceback" not in log
        assert not os.path.exists(f"/proc/{model_pid}"), "the model process ended with the server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_in_use_is_a_clean_error(server_repo, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = cli.main(["serve", "--model", str(server_repo), "--port", str(port), "--max-sessions", "1",
                         "--threads", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: cannot listen on 127.0.0.1:{port}" in err and "address already in use" in err


def test_model_process_flag():
    import argparse

    from openmoshi.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert parser.parse_args([]).model_process is None  # decided by the device
    assert parser.parse_args(["--model-process"]).model_process is True
    assert parser.parse_args(["--no-model-process"]).model_process is False
    assert serve.model_process_default("cpu") and not serve.model_process_default("cuda:0")


def test_ctrl_c_stops_the_server_and_its_model_process(server_repo):
    env = {**os.environ, "NO_TORCH_COMPILE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "openmoshi.cli", "serve", "--model", str(server_repo),
                             "--port", "0", "--max-sessions", "1", "--threads", "1", "--model-process"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "openmoshi serve:" in line:
                break
        log = "".join(lines)
        model_pid = int(re.search(r"model step in its own process \(pid (\d+)\)", log).group(1))
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        assert proc.wait(60) == 0
        log += proc.stderr.read()
        assert "stopped" in log and "Traceback" not in log, log
        assert not os.path.exists(f"/proc/{model_pid}"), "no model process left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
