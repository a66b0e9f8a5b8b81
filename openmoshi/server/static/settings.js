// The conversation settings: read from the form, checked as the server checks them
// (openmoshi/server/protocol.py parse_query), kept in localStorage, sent as the websocket URL's query.

const STORE_KEY = "openmoshi.settings";
const UINT64_MAX = (1n << 64n) - 1n;
const INT31_MAX = 2 ** 31 - 1;

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/; // what both JS and Python's float() read alike

function finiteAtLeast0(raw) {
  const v = Number(raw);
  return DECIMAL.test(raw) && Number.isFinite(v) && v >= 0 ? "" : "must be a number >= 0";
}
function intIn(max) {
  return (raw) => (/^\d+$/.test(raw) && Number(raw) <= max ? "" : `must be a whole number from 0 to ${max}`);
}
function seed(raw) {
  return /^\d+$/.test(raw) && BigInt(raw) <= UINT64_MAX ? "" : "must be a whole number from 0 to 2^64 - 1";
}
function finite(raw) {
  return DECIMAL.test(raw) && Number.isFinite(Number(raw)) ? "" : "must be a number";
}
function positive(raw) {
  const v = Number(raw);
  return DECIMAL.test(raw) && Number.isFinite(v) && v > 0 ? "" : "must be a number > 0";
}

// name -> [label in errors, check(raw) -> "" or what is wrong]. The token is free text.
export const FIELDS = {
  text_temperature: ["Text temperature", finiteAtLeast0],
  text_topk: ["Text top-k", intIn(INT31_MAX)],
  audio_temperature: ["Audio temperature", finiteAtLeast0],
  audio_topk: ["Audio top-k", intIn(INT31_MAX)],
  text_seed: ["Text seed", seed],
  audio_seed: ["Audio seed", seed],
  pad_mult: ["Pad multiplier", finite],
  repetition_penalty: ["Repetition penalty", positive],
  repetition_penalty_context: ["Repetition context", intIn(INT31_MAX)],
  token: ["Access token", () => ""],
};
const PERSISTED = Object.keys(FIELDS).filter((name) => name !== "token"); // a secret stays out of storage

// Fill the form: stored values first, then the page's own query (?text_temperature=0.5&token=... makes a link
// that opens with those settings).
export function loadSettings(form) {
  let stored = {};
  try {
    stored = JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {};
  } catch {
    stored = {};
  }
  const fromUrl = new URLSearchParams(location.search);
  for (const name of Object.keys(FIELDS)) {
    const input = form.elements.namedItem(name);
    if (!input) continue;
    if (fromUrl.has(name)) input.value = fromUrl.get(name);
    else if (PERSISTED.includes(name) && typeof stored[name] === "string") input.value = stored[name];
  }
}

export function saveSettings(form) {
  const values = {};
  for (const name of PERSISTED) values[name] = form.elements.namedItem(name).value.trim();
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(values));
  } catch {
    // storage refused (private mode): the settings still apply to this conversation
  }
}

export function clearSettings(form) {
  for (const name of Object.keys(FIELDS)) {
    const input = form.elements.namedItem(name);
    input.value = "";
    input.removeAttribute("aria-invalid");
  }
  saveSettings(form);
}

// {params: URLSearchParams of the non-empty fields, errors: ["Text top-k must be ...", ...]}.
export function readSettings(form) {
  const params = new URLSearchParams();
  const errors = [];
  for (const [name, [label, check]] of Object.entries(FIELDS)) {
    const input = form.elements.namedItem(name);
    const raw = input.value.trim();
    input.removeAttribute("aria-invalid");
    if (raw === "") continue;
    const problem = check(raw);
    if (problem) {
      errors.push(`${label} ${problem} (got "${raw}")`);
      input.setAttribute("aria-invalid", "true");
    } else {
      params.set(name, raw);
    }
  }
  return { params, errors };
}

// The websocket URL: /api/chat next to the page (ws: or wss: as the page), with the settings as its query.
export function chatUrl(params) {
  const url = new URL("api/chat", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = params.toString();
  url.hash = "";
  return url.toString();
}
