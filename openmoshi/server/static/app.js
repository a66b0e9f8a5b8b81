// openmoshi's web page: talk to Moshi through the server's /api/chat websocket (docs/protocol.md).
//
// The microphone goes through one AudioWorklet node (worklet.js) to a WebCodecs Opus encoder framed in Ogg
// (opus.js, ogg.js) and out as 0x01 messages; Moshi's 0x01 messages come back through the Ogg reader and the
// Opus decoder into the same node's jitter buffer; 0x02 text pieces are appended to the transcript.
// `window.openmoshiPage` exposes the state and counters (used by tests/server/test_web_page.py).

import { Resampler, StereoRecorder } from "./audio.js";
import { OpusReceiver, OpusSender, SAMPLE_RATE, opusSupport } from "./opus.js";
import { chatUrl, clearSettings, loadSettings, readSettings, saveSettings } from "./settings.js";

const KIND = { HANDSHAKE: 0, AUDIO: 1, TEXT: 2, CONTROL: 3, METADATA: 4, ERROR: 5, PING: 6, COLORED_TEXT: 7 };
const SEND_BACKLOG_BYTES = 256 * 1024; // beyond this the network is not keeping up: drop audio, say so
const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), start: $("start"), stop: $("stop"), clock: $("clock"), error: $("error"),
  warning: $("warning"), transcript: $("transcript"), record: $("record"), download: $("download"),
  recordingNote: $("recording-note"), form: $("settings"), settingsError: $("settings-error"),
  reset: $("reset-settings"), stats: $("stats"), meterUser: $("meter-user"), meterMoshi: $("meter-moshi"),
};

const page = {
  state: "idle", // idle | unavailable | starting | connecting | waiting | live | stopping | stopped | ended | error
  stats: {},
  conversation: null,
};
window.openmoshiPage = page;

function freshStats() {
  return {
    sentBytes: 0, sentPackets: 0, droppedUpstreamFrames: 0, receivedBytes: 0, receivedAudioMessages: 0,
    decodedFrames: 0, decodedRate: 0, playedFrames: 0, underruns: 0, droppedFrames: 0, bufferedMs: 0,
    textPieces: 0, contextRate: 0, recordedFrames: 0, oggErrors: 0, errors: [], metadata: null, url: "",
  };
}
page.stats = freshStats();

function setState(state, words) {
  page.state = state;
  document.body.dataset.state = state;
  ui.status.textContent = words;
  const busy = !["idle", "stopped", "ended", "error", "unavailable"].includes(state);
  ui.start.disabled = busy || state === "unavailable";
  ui.stop.disabled = !busy || state === "stopping";
  // Settings and recording are fixed for a conversation: they are read at Start.
  for (const el of [ui.record, ui.reset, ...ui.form.querySelectorAll("input")]) el.disabled = busy;
}

function showError(message) {
  page.stats.errors.push(message);
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function showWarning(message) {
  ui.warning.textContent = message;
  ui.warning.hidden = !message;
}

function micErrorWords(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") return "the microphone was refused: allow it for this page and press Start again";
  if (name === "NotFoundError" || name === "OverconstrainedError") return "no microphone was found";
  if (name === "NotReadableError") return "the microphone is busy or unavailable (another application may hold it)";
  return `the microphone could not be opened: ${(err && err.message) || err}`;
}

// One conversation: microphone, audio graph, codecs and websocket, from Start to its end.
class Conversation {
  constructor(url, record) {
    this.url = url;
    this.record = record;
    this.live = false;
    this.closed = false;
    this.userStopped = false;
    this.serverError = "";
    this.opened = false;
    this.startedAt = 0;
    this.levels = { user: 0, moshi: 0 };
    this.playResamplers = new Map();
  }

  async start() {
    setState("starting", "Asking for the microphone…");
    // The audio context is made and resumed before the first await, while the click still counts as a user
    // gesture (Safari on a phone starts no audio otherwise).
    this.ctx = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
    this.ctx.resume().catch(() => {});
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    }).catch((err) => {
      throw new Error(micErrorWords(err));
    });
    if (this.closed) return this.#release();
    await this.#buildAudio();
    if (this.closed) return this.#release();
    this.sender = new OpusSender((bytes) => this.#sendAudio(bytes), (msg) => this.#fail(msg));
    this.receiver = new OpusReceiver((pcm, rate) => this.#play(pcm, rate), (msg) => showError(msg));
    setState("connecting", "Connecting to the server…");
    page.stats.url = this.url.replace(/token=[^&]*/, "token=…");
    this.ws = new WebSocket(this.url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => {
      this.opened = true;
      if (!this.live) setState("waiting", "Connected; waiting for Moshi to be ready…");
    };
    this.ws.onmessage = (event) => this.#message(event.data);
    this.ws.onclose = (event) => this.#closed(event);
  }

  async #buildAudio() {
    // A 24 kHz context makes the browser resample the microphone; a browser that will not connect a
    // microphone to a context of another rate gets its default rate and our resampler.
    try {
      this.source = this.ctx.createMediaStreamSource(this.stream);
    } catch {
      await this.ctx.close();
      this.ctx = new AudioContext({ latencyHint: "interactive" });
      this.source = this.ctx.createMediaStreamSource(this.stream);
    }
    await this.ctx.audioWorklet.addModule(new URL("./worklet.js", import.meta.url));
    this.node = new AudioWorkletNode(this.ctx, "openmoshi-duplex", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { targetMs: 100, maxMs: 500, batchFrames: 512 },
    });
    this.node.port.onmessage = (event) => this.#audioBatch(event.data);
    this.source.connect(this.node);
    this.node.connect(this.ctx.destination);
    await this.ctx.resume();
    page.stats.contextRate = this.ctx.sampleRate;
    this.micResampler = new Resampler(this.ctx.sampleRate, SAMPLE_RATE);
    this.recorder = this.record ? new StereoRecorder(this.ctx.sampleRate) : null;
  }

  // Every ~20 ms from the audio thread: the microphone's samples and what was played at the same time.
  #audioBatch(msg) {
    const s = page.stats;
    s.playedFrames = msg.played;
    s.underruns = msg.underruns;
    s.droppedFrames = msg.dropped;
    s.bufferedMs = Math.round((msg.buffered * 1000) / this.ctx.sampleRate);
    this.levels.user = Math.max(this.levels.user, msg.micLevel);
    this.levels.moshi = Math.max(this.levels.moshi, msg.outLevel);
    if (!this.live) return; // before the handshake the server takes no audio; nothing is kept
    this.sender.encode(this.micResampler.process(msg.mic));
    if (this.recorder) {
      this.recorder.add(msg.out, msg.mic);
      s.recordedFrames = this.recorder.frames;
    }
  }

  #sendAudio(bytes) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (this.ws.bufferedAmount > SEND_BACKLOG_BYTES) {
      page.stats.droppedUpstreamFrames++;
      showWarning("The network is not keeping up: some of your audio is being dropped.");
      return;
    }
    const msg = new Uint8Array(bytes.length + 1);
    msg[0] = KIND.AUDIO;
    msg.set(bytes, 1);
    this.ws.send(msg);
    page.stats.sentBytes += msg.length;
    page.stats.sentPackets = this.sender.packets;
  }

  #play(pcm, rate) {
    page.stats.decodedFrames += pcm.length;
    page.stats.decodedRate = rate;
    let resampler = this.playResamplers.get(rate);
    if (!resampler) this.playResamplers.set(rate, (resampler = new Resampler(rate, this.ctx.sampleRate)));
    const samples = resampler.process(pcm);
    if (this.node && samples.length) this.node.port.postMessage({ type: "play", samples }, [samples.buffer]);
  }

  #message(data) {
    const bytes = new Uint8Array(data);
    page.stats.receivedBytes += bytes.length;
    if (bytes.length === 0) return showError("the server sent an empty message");
    const payload = bytes.subarray(1);
    const utf8 = (b) => new TextDecoder().decode(b);
    switch (bytes[0]) {
      case KIND.HANDSHAKE:
        this.live = true;
        this.startedAt = performance.now();
        setState("live", "Live: talk to Moshi");
        break;
      case KIND.AUDIO:
        page.stats.receivedAudioMessages++;
        this.receiver.push(payload);
        page.stats.oggErrors = this.receiver.ogg.errors;
        break;
      case KIND.TEXT:
        this.#text(utf8(payload));
        break;
      case KIND.COLORED_TEXT:
        if (payload.length) this.#text(utf8(payload.subarray(1)));
        break;
      case KIND.METADATA:
        try {
          page.stats.metadata = JSON.parse(utf8(payload));
        } catch {
          showError("the server sent metadata that is not JSON");
        }
        break;
      case KIND.ERROR:
        this.serverError = utf8(payload) || "no reason given";
        showError(`The server refused: ${this.serverError}`);
        break;
      case KIND.CONTROL:
      case KIND.PING:
        break;
      default:
        showError(`the server sent an unknown message kind 0x${bytes[0].toString(16).padStart(2, "0")}`);
    }
  }

  #text(piece) {
    page.stats.textPieces++;
    const box = ui.transcript;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 8;
    box.append(piece);
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  #fail(message) {
    showError(message);
    this.stop(false);
  }

  stop(byUser = true) {
    if (this.closed) return;
    this.userStopped = byUser;
    this.closed = true;
    setState("stopping", "Stopping…");
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "the user stopped");
    this.#release();
    if (!this.ws) this.#finish();
  }

  #closed(event) {
    this.closed = true;
    this.#release();
    this.#finish(event);
  }

  #finish(event) {
    if (this.finished) return;
    this.finished = true;
    if (this.serverError) setState("error", `Ended: ${this.serverError}`);
    else if (this.userStopped) setState("stopped", "Stopped");
    else if (!this.opened && event) setState("error", `Could not connect to the server (${this.url.split("?")[0]})`);
    else if (event) setState("ended", `The server closed the connection${event.reason ? `: ${event.reason}` : ` (code ${event.code})`}`);
    else setState("error", "Stopped after an error");
    this.#offerRecording();
  }

  #release() {
    // Safe to call more than once, and at any point of start(): each resource is let go if it exists.
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.sender) this.sender.close();
    if (this.receiver) this.receiver.close();
    if (this.node) this.node.port.onmessage = null;
    if (this.ctx && this.ctx.state !== "closed") this.ctx.close();
  }

  #offerRecording() {
    if (!this.recorder || this.recorder.frames === 0) return;
    const blob = this.recorder.toBlob();
    const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
    ui.download.href = URL.createObjectURL(blob);
    ui.download.download = `openmoshi-${stamp}.wav`;
    ui.download.hidden = false;
    ui.recordingNote.textContent = `${this.recorder.seconds.toFixed(1)} s, stereo wav: Moshi left, you right`;
  }
}

async function start() {
  const { params, errors } = readSettings(ui.form);
  ui.settingsError.hidden = errors.length === 0;
  ui.settingsError.textContent = errors.join("; ");
  if (errors.length) {
    ui.form.closest("details").open = true;
    return setState("error", "Some settings are not valid");
  }
  saveSettings(ui.form);
  ui.error.hidden = true;
  showWarning("");
  ui.transcript.textContent = "";
  if (ui.download.href) URL.revokeObjectURL(ui.download.href);
  ui.download.hidden = true;
  ui.download.removeAttribute("href");
  ui.recordingNote.textContent = "";
  page.stats = freshStats();
  params.set("metadata", "1"); // openmoshi's server then says which model and seeds it used (others ignore it)
  const conversation = new Conversation(chatUrl(params), ui.record.checked);
  page.conversation = conversation;
  try {
    await conversation.start();
  } catch (err) {
    showError((err && err.message) || String(err));
    conversation.stop(false);
  }
}

function describeMetadata(meta) {
  if (!meta) return "—";
  if (meta.server !== "openmoshi") return JSON.stringify(meta);
  const seeds = [["text", meta.text_seed], ["audio", meta.audio_seed]].filter(([, v]) => v !== null && v !== undefined);
  return [
    meta.model,
    seeds.length ? `seed ${seeds.map(([k, v]) => `${k} ${v}`).join(", ")}` : "",
    `text T ${meta.text_temperature}, top-k ${meta.text_topk}`,
    `audio T ${meta.audio_temperature}, top-k ${meta.audio_topk}`,
  ].filter(Boolean).join("; ");
}

// Moshi's audio arriving late shows as underruns: more than 3 in the last 5 s says so in words (the server or
// the network is behind real time), and the warning goes once 5 s pass without one.
const LATE_WARNING = "Moshi's audio is arriving late: the server or the network is behind real time.";
const underrunHistory = [];
function watchUnderruns() {
  const c = page.conversation;
  const live = c && c.live && !c.closed;
  underrunHistory.push(live ? page.stats.underruns : 0);
  if (underrunHistory.length > 10) underrunHistory.shift();
  const recent = underrunHistory[underrunHistory.length - 1] - underrunHistory[0];
  if (live && recent > 3) showWarning(LATE_WARNING);
  else if (ui.warning.textContent === LATE_WARNING && (!live || recent === 0)) showWarning("");
}

function renderStats() {
  watchUnderruns();
  const s = page.stats;
  const rows = [
    ["Server", s.url || "—"],
    ["Sent", `${(s.sentBytes / 1024).toFixed(1)} kB (${s.sentPackets} Opus packets)`],
    ["Received", `${(s.receivedBytes / 1024).toFixed(1)} kB, ${(s.decodedFrames / (s.decodedRate || SAMPLE_RATE)).toFixed(1)} s of audio`],
    ["Jitter buffer", `${s.bufferedMs} ms; ${s.underruns} underruns; ${s.droppedFrames} samples dropped`],
    ["Audio context", s.contextRate ? `${s.contextRate} Hz` : "—"],
    ["Model", describeMetadata(s.metadata)],
  ];
  ui.stats.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    return [dt, dd];
  }));
  const c = page.conversation;
  if (c && c.live && !c.closed) {
    const secs = Math.floor((performance.now() - c.startedAt) / 1000);
    ui.clock.textContent = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
  }
}

// Meters: dBFS from -60 to 0 as the bar's width; peaks held between frames, falling back smoothly.
const shown = { user: 0, moshi: 0 };
function renderMeters() {
  const c = page.conversation;
  for (const [who, el] of [["user", ui.meterUser], ["moshi", ui.meterMoshi]]) {
    const level = c && !c.closed ? c.levels[who] : 0;
    if (c) c.levels[who] = 0;
    const db = level > 0 ? 20 * Math.log10(level) : -100;
    const width = Math.max(0, Math.min(1, (db + 60) / 60));
    shown[who] = Math.max(width, shown[who] * 0.85);
    el.style.width = `${(shown[who] * 100).toFixed(1)}%`;
  }
  requestAnimationFrame(renderMeters);
}

async function init() {
  loadSettings(ui.form);
  if (new URLSearchParams(location.search).has("token")) {
    // The token is in the form now: keep it out of the address bar (screenshots, shared screens, history).
    const clean = new URL(location.href);
    clean.searchParams.delete("token");
    history.replaceState(null, "", clean);
  }
  ui.start.addEventListener("click", start);
  ui.stop.addEventListener("click", () => page.conversation && page.conversation.stop(true));
  ui.reset.addEventListener("click", () => clearSettings(ui.form));
  window.addEventListener("pagehide", () => page.conversation && page.conversation.stop(true));
  setInterval(renderStats, 500);
  requestAnimationFrame(renderMeters);
  renderStats();
  if (!window.isSecureContext || !navigator.mediaDevices) {
    setState("unavailable", "Unavailable");
    return showError(
      `Browsers give the microphone only to https pages or localhost; this page is ${location.origin}. ` +
        "Start the server with --ssl-self-signed (or --ssl-cert/--ssl-key), or open it on localhost.",
    );
  }
  const problem = await opusSupport();
  if (problem) {
    setState("unavailable", "Unavailable");
    return showError(`This browser cannot run the page: ${problem}.`);
  }
  setState("idle", "Ready: press Start and talk");
}

init();
