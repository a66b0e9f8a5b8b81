"""Two `openmoshi serve` replicas behind Debian's nginx, configured by the block docs/deploy.md shows.

The test reads the nginx configuration from docs/deploy.md (so the page shows what runs here), puts its replicas'
ports and its own port in place of the page's, wraps it in a main context whose files all live in tmp_path, and
starts nginx in the foreground (`daemon off`), then stops it. Conversations held through nginx at once land on
both replicas (least connections), each replica's /api/status says so, and audio and text come back through the
proxy. scripts/test.sh installs nginx (`apt-get install nginx`) where it is missing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_client_e2e import ROOT, Replica, free_port, http_get, user_recording

from openmoshi.client import Options, chat_url, session_query, talk_file
from openmoshi.server.protocol import SessionParams

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@pytest.fixture(autouse=True)
def _nginx_installed() -> None:
    """A missing nginx fails the test (scripts/test.sh installs it); it is never skipped."""
    assert NGINX is not None, "nginx is not installed: run scripts/test.sh, which installs Debian's nginx"
DOC = ROOT / "docs" / "deploy.md"
MARK = "<!-- tested: the block below is read by tests/server/test_nginx.py -->"


def documented_config() -> str:
    """The ```nginx block right after MARK in docs/deploy.md."""
    text = DOC.read_text()
    assert MARK in text, f"{DOC} lost the marker of the tested nginx block"
    match = re.search(r"```nginx\n(.*?)```", text[text.index(MARK):], re.S)
    assert match, "no ```nginx block after the marker"
    return match.group(1)


def documented_status_fields() -> set[str]:
    """The /api/status keys docs/deploy.md lists (its endpoint table)."""
    line = next(row for row in DOC.read_text().splitlines() if row.startswith("| `GET /api/status`"))
    return set(re.findall(r"`(\w+)`", line.split("|")[2])) - {"p50", "p90", "p99"}


def nginx_conf(folder: Path, port: int, replicas: list[int]) -> Path:
    """nginx.conf for a foreground nginx whose every file is under `folder`, around the documented block."""
    block = documented_config()
    for doc_port, port_ in zip((8998, 8999), replicas, strict=True):
        assert f"server 127.0.0.1:{doc_port} " in block
        block = block.replace(f"server 127.0.0.1:{doc_port} ", f"server 127.0.0.1:{port_} ")
    assert "listen 8080;" in block
    block = block.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                          "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers may then read the files of tmp_path
    conf = folder / "nginx.conf"
    conf.write_text(f"""{user}daemon off;
worker_processes 1;
pid {folder / 'nginx.pid'};
error_log {folder / 'error.log'} info;
events {{ worker_connections 128; }}
http {{
    access_log {folder / 'access.log'};
{temp}
{block}
}}
""")
    return conf


class Nginx:
    def __init__(self, folder: Path, replicas: list[int]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.port = folder, free_port()
        conf = nginx_conf(folder, self.port, replicas)
        check = subprocess.run([NGINX, "-t", "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            try:
                if http_get(f"http://127.0.0.1:{self.port}/api/health", 2.0)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "nginx did not answer"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish the open requests, then exit
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def test_two_replicas_behind_nginx(server_repo, tmp_path):
    replicas = [Replica(server_repo, tmp_path / f"serve{i}.log") for i in range(2)]
    proxy = None
    try:
        for r in replicas:
            r.wait_ready()
        proxy = Nginx(tmp_path / "nginx", [r.port for r in replicas])
        base = f"ws://127.0.0.1:{proxy.port}/api/chat"

        async def two_at_once():
            options = Options(pace=False, window=4, timeout=60.0, tail_seconds=0.24)
            urls = [chat_url(base, session_query(SessionParams(text_seed=i, audio_seed=i))) for i in (1, 2)]
            return await asyncio.gather(*(talk_file(u, user_recording(0.8, i), options) for i, u in enumerate(urls)))

        recs = asyncio.run(two_at_once())
        deadline = time.monotonic() + 60  # the close travels through nginx; the engine frees a row between steps
        while any(r.status()["sessions_in_use"] for r in replicas) and time.monotonic() < deadline:
            time.sleep(0.2)
        statuses = [r.status() for r in replicas]
        code, body = http_get(f"http://127.0.0.1:{proxy.port}/api/status")
    finally:
        if proxy is not None:
            proxy.stop()
        for r in replicas:  # both at once: a stop takes seconds
            r.interrupt()
        codes = [r.stop() for r in replicas]
    logs = [r.log() for r in replicas]
    for rec in recs:
        assert rec.frames_sent == 10 + 3 and rec.frames_received >= rec.frames_sent - 2
        assert abs(rec.stereo()[:, 0]).max() > 1e-3 and rec.text(), "audio and text come back through nginx"
    # one conversation on each replica: least_conn sent the second to the idle one
    assert [s["conversations_opened"] for s in statuses] == [1, 1], statuses
    assert all(s["sessions_in_use"] == 0 for s in statuses), statuses  # both ended and freed their slots
    assert code == 200 and '"sessions_max"' in body  # the monitoring endpoint passes through too
    assert documented_status_fields() == set(statuses[0]), "docs/deploy.md lists other /api/status fields"
    assert codes == [0, 0], logs
    assert all("via 127.0.0.1" in log for log in logs), logs  # X-Forwarded-For reached the replicas' logs
