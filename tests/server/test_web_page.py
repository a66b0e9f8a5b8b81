"""The web page (openmoshi/server/static) in headless Chromium, driven by Playwright, a wav file as its microphone.

Debian's chromium (scripts/test.sh installs it; Playwright's own browsers are never downloaded). The page talks
to openmoshi's server with a tiny model (`make_server`, tests/server/conftest.py), and to a small aiohttp stub in
this file that follows docs/protocol.md with a known signal: it decodes the page's Ogg/Opus with sphn (the page's
own Ogg muxer and WebCodecs encoder checked by an independent reader) and sends a 440 Hz tone as Moshi (so the
recording's channels can be told apart) and fixed text pieces.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from openmoshi.server import protocol

pytestmark = pytest.mark.timeout(120)

CHROMIUM = Path("/usr/bin/chromium")
STATIC = Path(__file__).resolve().parents[2] / "openmoshi" / "server" / "static"
RATE = 24000
FRAME = 1920  # 80 ms
PIECES = ["Hello", " there,", " I", " am", " Moshi."]


def write_mic_wav(path: Path, seconds: float = 4.0, rate: int = 48000) -> Path:
    """A 'voice' for the fake microphone: a 220 Hz tone with a syllable-like envelope, 16-bit mono."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = 0.4 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((pcm * 32767).astype("<i2").tobytes())
    return path


class StubServer:
    """Follows the protocol: handshake, then 80 ms of Moshi (a 440 Hz tone) per 80 ms, a text piece every 4 steps,
    and it decodes what the page sends."""

    def __init__(self) -> None:
        self.queries: list[dict] = []
        self.decoded_samples = 0
        self.received_bytes = 0
        self.decode_errors: list[str] = []
        self.close_codes: list[int | None] = []
        self.open = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StubServer:
        self.thread.start()
        assert self.ready.wait(10), "the stub server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        app = web.Application()
        async def index(request):
            return web.FileResponse(STATIC / "index.html")

        app.router.add_get("/", index)
        app.router.add_get("/api/chat", self._chat)
        app.router.add_static("/static", STATIC)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    async def _chat(self, request):
        import sphn
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        query = dict(request.query)
        self.queries.append(query)
        protocol.parse_query({k: v for k, v in query.items() if k != "token"})  # the page sends valid values
        self.open += 1
        reader = sphn.OpusStreamReader(RATE)
        sender = asyncio.ensure_future(self._send(ws))
        await ws.send_bytes(protocol.handshake())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    self.decode_errors.append(f"non-binary message {msg.type}")
                    continue
                message = protocol.decode(msg.data)
                if message.kind is protocol.Kind.AUDIO:
                    self.received_bytes += len(message.data)
                    self.decoded_samples += len(reader.append_bytes(message.data))
        except Exception as err:  # noqa: BLE001 - recorded for the test to report
            self.decode_errors.append(repr(err))
        finally:
            sender.cancel()
            self.open -= 1
            self.close_codes.append(ws.close_code)
        return ws

    async def _send(self, ws) -> None:
        import sphn

        writer = sphn.OpusStreamWriter(RATE)
        t = np.arange(FRAME) / RATE
        step = 0
        while not ws.closed:
            pcm = (0.3 * np.sin(2 * np.pi * 440 * (t + step * FRAME / RATE))).astype(np.float32)
            data = writer.append_pcm(pcm)
            if data:
                await ws.send_bytes(protocol.audio(data))
            if step % 4 == 3:
                await ws.send_bytes(protocol.text(PIECES[(step // 4) % len(PIECES)]))
            step += 1
            await asyncio.sleep(FRAME / RATE)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's chromium with a wav file as its microphone, one instance for this module's tests."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does)")
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("chromium")
    mic = write_mic_wav(folder / "mic.wav")
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}",
        "--host-resolver-rules=MAP insecure.test 127.0.0.1",  # a plain-http origin that is not localhost
    ]
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(folder / "profile"), executable_path=str(CHROMIUM), headless=True, args=args,
            viewport={"width": 390, "height": 844},  # a phone's screen
        )
        yield context
        context.close()


def open_page(browser, url: str):
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.goto(url)
    page.wait_for_function("document.getElementById('status').textContent !== 'Loading…'")
    return page, problems


def stats(page) -> dict:
    return page.evaluate("JSON.parse(JSON.stringify(window.openmoshiPage.stats))")


def screenshot_shows_text(page, selector: str) -> None:
    """The element's box in a screenshot is not blank (text drawn over the background)."""
    from PIL import Image

    shot = Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("L")
    assert np.asarray(shot, dtype=np.float32).std() > 10, f"{selector} is blank in the screenshot"


def test_page_with_the_server(browser, make_server, caplog):
    """openmoshi's server in real time (80 ms steps) with a tiny model: the page connects, sends Opus, plays
    Moshi's audio, shows Moshi's words, stops; the server decoded the page's audio and freed the slot."""
    caplog.set_level(logging.INFO, logger="openmoshi.server")
    srv = make_server(step_period=None, wait_for_input=0.0, max_sessions=1)
    page, problems = open_page(browser, srv.url + "/")
    assert page.inner_text("#status").startswith("Ready"), page.inner_text("#status")
    page.click("#start")
    page.wait_for_function("openmoshiPage.state === 'live'", timeout=20000)
    page.wait_for_function(
        "(() => { const t = openmoshiPage.stats; return t.playedFrames > t.contextRate && t.sentPackets > 40 && "
        "document.getElementById('transcript').textContent.trim().length > 0; })()", timeout=30000)
    snapshot = stats(page)
    assert snapshot["decodedFrames"] > 0 and snapshot["oggErrors"] == 0, snapshot
    assert snapshot["metadata"]["server"] == "openmoshi" and snapshot["metadata"]["model"] == "tiny-test"
    assert "tiny-test" in page.text_content("#stats")
    screenshot_shows_text(page, "#transcript")

    page.click("#stop")
    page.wait_for_function("openmoshiPage.state === 'stopped'", timeout=10000)
    assert srv.engine.wait_settled()
    engine = srv.engine.stats()
    assert engine["sessions_free"] == 1 and engine["conversations_closed"] == 1, engine
    closed = [r.getMessage() for r in caplog.records if "closed after" in r.getMessage()]
    assert len(closed) == 1, closed
    frames_in = int(re.search(r"(\d+) frames in", closed[0]).group(1))
    assert frames_in >= 10, closed[0]  # the server decoded the page's Opus into whole 80 ms frames
    assert stats(page)["errors"] == [] and problems == [], (stats(page)["errors"], problems)
    page.close()


def test_page_talks_records_and_stops(browser):
    with StubServer() as server:
        page, problems = open_page(browser, f"http://127.0.0.1:{server.port}/")
        assert page.inner_text("#status").startswith("Ready"), page.inner_text("#status")
        page.click("details.settings summary")
        page.fill("input[name=text_temperature]", "0.5")
        page.fill("input[name=audio_topk]", "100")
        page.fill("input[name=text_seed]", str(2**64 - 1))
        page.click("#start")
        page.wait_for_function("openmoshiPage.state === 'live'", timeout=15000)
        # A second of conversation each way: Opus out (decoded by sphn), Opus in (decoded and played).
        page.wait_for_function(
            "(() => { const t = openmoshiPage.stats; return t.playedFrames > t.contextRate * 1.2 && "
            "t.sentPackets > 40 && t.textPieces >= 3; })()", timeout=20000)
        snapshot = stats(page)
        assert server.decoded_samples > RATE, (server.decoded_samples, server.decode_errors)
        assert server.queries[0]["text_temperature"] == "0.5"
        assert server.queries[0]["audio_topk"] == "100"
        assert server.queries[0]["text_seed"] == str(2**64 - 1)
        assert "token" not in server.queries[0]
        assert snapshot["decodedFrames"] > 0 and snapshot["oggErrors"] == 0, snapshot
        transcript = page.inner_text("#transcript")
        assert transcript.startswith("Hello there, I"), transcript

        screenshot_shows_text(page, "#transcript")

        page.click("#stop")
        page.wait_for_function("openmoshiPage.state === 'stopped'", timeout=10000)
        assert page.inner_text("#status") == "Stopped"
        for _ in range(100):  # the server sees the close shortly after
            if server.open == 0:
                break
            page.wait_for_timeout(50)
        assert server.open == 0 and server.close_codes == [1000], server.close_codes
        assert not server.decode_errors, server.decode_errors
        assert stats(page)["errors"] == [], stats(page)["errors"]
        assert problems == [], problems

        # The recording: stereo wav at the audio context's rate, Moshi's tone left, the microphone right.
        assert page.is_visible("#download")
        wav_b64 = page.evaluate("""async () => {
            const buf = new Uint8Array(await (await fetch(document.getElementById('download').href)).arrayBuffer());
            let s = ''; for (const b of buf) s += String.fromCharCode(b); return btoa(s); }""")
        with wave.open(io.BytesIO(base64.b64decode(wav_b64))) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, snapshot["contextRate"])
            audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32768.0
        assert len(audio) >= snapshot["contextRate"]
        moshi, user = audio[:, 0], audio[:, 1]
        assert np.sqrt(np.mean(moshi**2)) > 0.05 and np.sqrt(np.mean(user**2)) > 0.01
        spectrum = np.abs(np.fft.rfft(moshi[-snapshot["contextRate"]:]))
        peak_hz = np.argmax(spectrum) * snapshot["contextRate"] / (2 * (len(spectrum) - 1))
        assert abs(peak_hz - 440) < 10, peak_hz  # Moshi's channel holds Moshi's tone, not the microphone's
        page.close()


def test_server_error_is_shown_in_words(browser, make_server):
    """A refusal (the error kind, then a close) reaches the user in the server's words."""
    srv = make_server(server={"token": "secret"})
    page, problems = open_page(browser, srv.url + "/?token=wrong")  # the page's query fills the token field
    assert "token" not in page.url  # and leaves the address bar
    page.click("#start")
    page.wait_for_function("openmoshiPage.state === 'error'", timeout=15000)
    assert "wrong token" in page.inner_text("#status")
    assert "wrong token" in page.inner_text("#error")
    assert srv.engine.stats()["conversations_opened"] == 0
    page.close()


def test_settings_are_checked_before_connecting(browser):
    with StubServer() as server:
        page, _ = open_page(browser, f"http://127.0.0.1:{server.port}/")
        page.click("details.settings summary")
        page.fill("input[name=text_topk]", "-3")
        page.fill("input[name=audio_temperature]", "0x10")
        page.click("#start")
        page.wait_for_function("openmoshiPage.state === 'error'")
        message = page.inner_text("#settings-error")
        assert "Text top-k" in message and "Audio temperature" in message
        assert server.queries == []  # nothing was sent
        page.close()


def test_plain_http_origin_explains_https(browser):
    """Browsers give the microphone only to https or localhost: the page says so instead of failing later."""
    with StubServer() as server:
        page, _ = open_page(browser, f"http://insecure.test:{server.port}/")
        assert page.evaluate("window.isSecureContext") is False
        assert page.evaluate("openmoshiPage.state") == "unavailable"
        message = page.inner_text("#error")
        assert "https" in message and "localhost" in message and "--ssl-self-signed" in message, message
        assert page.is_disabled("#start")
        page.close()


def test_ogg_framing_round_trip(browser):
    """The page's Ogg writer and reader: packets of awkward sizes, bytes fed in odd chunks, a damaged page."""
    with StubServer() as server:
        page, _ = open_page(browser, f"http://127.0.0.1:{server.port}/")
        result = page.evaluate("""async () => {
            const { OggWriter, OggReader } = await import('./static/ogg.js');
            const sizes = [0, 1, 254, 255, 256, 510, 3, 65025, 65100];
            const packets = sizes.map((n, k) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + k) & 255));
            const w = new OggWriter(1234);
            const bytes = [];
            packets.forEach((p, i) => bytes.push(...w.pages([p], 960 * (i + 1))));
            const all = Uint8Array.from(bytes);
            const read = (chunks) => { const r = new OggReader(); const out = [];
              for (const c of chunks) out.push(...r.push(c)); return { out, r }; };
            const equal = (a, b) => a.length === b.length && a.every((x, j) => x === b[j]);
            const same = (got) => got.length === packets.length && got.every((g, i) => equal(g.packet, packets[i]));
            const byByte = read(Array.from(all, (b) => Uint8Array.of(b)));
            const odd = []; for (let i = 0; i < all.length; i += 333) odd.push(all.subarray(i, i + 333));
            const byOdd = read(odd);
            const damaged = all.slice(); damaged[28 + 27 + 1] ^= 0xff;  // the second page's one-byte packet
            const bad = read([damaged]);
            return { byByte: same(byByte.out), byOdd: same(byOdd.out), bos: byOdd.out[0].bos,
                     granule: Number(byOdd.out[2].granule), badErrors: bad.r.errors,
                     badSizes: bad.out.map((p) => p.packet.length) };
        }""")
        page.close()
    assert result["byByte"] and result["byOdd"], result
    assert result["bos"] and result["granule"] == 3 * 960
    assert result["badErrors"] == 1 and result["badSizes"] == [0, 254, 255, 256, 510, 3, 65025, 65100], result


def test_resampler_for_browsers_without_24khz_contexts(browser):
    """Where the audio context cannot run at 24 kHz (Firefox), the page resamples: chunked equals whole, the
    length follows the ratio, a tone keeps its pitch."""
    with StubServer() as server:
        page, _ = open_page(browser, f"http://127.0.0.1:{server.port}/")
        result = page.evaluate("""async () => {
            const { Resampler } = await import('./static/audio.js');
            const out = {};
            for (const [from, to] of [[48000, 24000], [44100, 24000], [24000, 44100]]) {
              const x = Float32Array.from({ length: from }, (_, i) => Math.sin(2 * Math.PI * 300 * i / from));
              const whole = new Resampler(from, to).process(x);
              const r = new Resampler(from, to); const parts = [];
              for (let i = 0; i < x.length; i += 128) parts.push(...r.process(x.subarray(i, i + 128)));
              let diff = 0; for (let i = 0; i < whole.length; i++) diff = Math.max(diff, Math.abs(whole[i] - parts[i]));
              let crossings = 0;
              for (let i = 1; i < whole.length; i++) if (whole[i - 1] < 0 && whole[i] >= 0) crossings++;
              out[`${from}-${to}`] = { n: whole.length, chunked: parts.length, diff, crossings };
            }
            return out;
        }""")
        page.close()
    for key, r in result.items():
        to = int(key.split("-")[1])
        assert abs(r["n"] - to) <= 2 and abs(r["chunked"] - r["n"]) <= 1, (key, r)
        assert r["diff"] < 1e-5, (key, r)
        assert abs(r["crossings"] - 300) <= 1, (key, r)  # one second of 300 Hz


def test_static_files_are_package_data():
    """The page ships in the wheel: every file it loads is in the package data glob."""
    pyproject = (STATIC.parents[2] / "pyproject.toml").read_text()
    package_data = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("[", 2)
    assert '"server/static/**/*"' in package_data[1], "openmoshi/server/static is not in the package data"
    html = (STATIC / "index.html").read_text()
    for name in ("static/app.js", "static/style.css"):
        assert name in html
    for js in STATIC.glob("*.js"):
        text = js.read_text()
        assert "http://" not in text and "https://" not in text, f"{js.name} loads something from the network"
