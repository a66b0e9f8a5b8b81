// Ogg framing (RFC 3533) and the Ogg/Opus headers (RFC 7845), written for openmoshi's page.
//
// The wire carries an Ogg/Opus stream in 0x01 messages (the first chunk holds the two header pages), but
// WebCodecs works on bare Opus packets: OggWriter wraps the encoder's packets into pages, OggReader takes
// arbitrary byte chunks from the websocket and gives back whole packets. No dependencies.

const CAPTURE = [0x4f, 0x67, 0x67, 0x53]; // "OggS"
const FLAG_CONTINUED = 0x01;
const FLAG_BOS = 0x02;
const FLAG_EOS = 0x04;
const MAX_SEGMENTS = 255;

// CRC-32 of Ogg: polynomial 0x04c11db7, most significant bit first, initial value 0, no final xor.
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let bit = 0; bit < 8; bit++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    table[i] = r >>> 0;
  }
  return table;
})();

export function oggCrc(bytes) {
  let crc = 0;
  for (let i = 0; i < bytes.length; i++) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ bytes[i]) & 0xff]) >>> 0;
  return crc >>> 0;
}

const ascii = (s) => Uint8Array.from(s, (c) => c.charCodeAt(0));

function startsWith(bytes, prefix) {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

export function concatBytes(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const OPUS_HEAD = ascii("OpusHead");
const OPUS_TAGS = ascii("OpusTags");

// The identification header: version 1, channel count, pre-skip (48 kHz samples), the input rate, gain 0,
// mapping family 0 (mono or stereo).
export function opusHead({ channels = 1, preSkip = 312, inputRate = 24000 } = {}) {
  const head = new Uint8Array(19);
  head.set(OPUS_HEAD, 0);
  const view = new DataView(head.buffer);
  view.setUint8(8, 1);
  view.setUint8(9, channels);
  view.setUint16(10, preSkip, true);
  view.setUint32(12, inputRate, true);
  view.setInt16(16, 0, true);
  view.setUint8(18, 0);
  return head;
}

export function parseOpusHead(packet) {
  if (!startsWith(packet, OPUS_HEAD) || packet.length < 19) return null;
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const version = view.getUint8(8);
  if (version >> 4 !== 0) return null; // a major version we do not know
  return {
    channels: view.getUint8(9),
    preSkip: view.getUint16(10, true),
    inputRate: view.getUint32(12, true),
    mapping: view.getUint8(18),
  };
}

// The comment header: a vendor string and no user comments.
export function opusTags(vendor = "openmoshi web") {
  const v = new TextEncoder().encode(vendor);
  const tags = new Uint8Array(8 + 4 + v.length + 4);
  tags.set(OPUS_TAGS, 0);
  const view = new DataView(tags.buffer);
  view.setUint32(8, v.length, true);
  tags.set(v, 12);
  view.setUint32(12 + v.length, 0, true);
  return tags;
}

export const isOpusTags = (packet) => startsWith(packet, OPUS_TAGS);

// Writes one logical stream: `page(packets, granule)` returns the bytes of one or more pages holding those
// packets whole (a packet longer than what 255 lacing values describe continues on the next page).
export class OggWriter {
  constructor(serial = (Math.random() * 0x100000000) >>> 0) {
    this.serial = serial >>> 0;
    this.sequence = 0;
    this.started = false;
    this.ended = false;
  }

  // packets: Uint8Array[]; granule: the position (48 kHz samples for Opus) after the last packet ends.
  pages(packets, granule, { eos = false } = {}) {
    if (this.ended) throw new Error("the Ogg stream has already ended");
    // Lacing: each packet is runs of 255 then one value < 255 (0 when its length is a multiple of 255).
    const segments = []; // [length, packetIndex, isLastOfPacket]
    packets.forEach((p, index) => {
      let left = p.length;
      while (left >= 255) {
        segments.push([255, index, false]);
        left -= 255;
      }
      segments.push([left, index, true]);
    });
    const out = [];
    let offsets = packets.map(() => 0);
    let continued = false;
    for (let first = 0; first < segments.length || (first === 0 && eos); first += MAX_SEGMENTS) {
      const chunk = segments.slice(first, first + MAX_SEGMENTS);
      const last = first + MAX_SEGMENTS >= segments.length;
      const ends = chunk.some((s) => s[2]);
      const body = [];
      for (const [len, index] of chunk) {
        body.push(packets[index].subarray(offsets[index], offsets[index] + len));
        offsets[index] += len;
      }
      let flags = continued ? FLAG_CONTINUED : 0;
      if (!this.started) flags |= FLAG_BOS;
      if (last && eos) flags |= FLAG_EOS;
      // A page on which no packet ends carries granule -1 (RFC 3533); the empty EOS page keeps the position.
      const position = ends || segments.length === 0 ? granule : -1;
      out.push(this.#page(flags, position, chunk.map((s) => s[0]), concatBytes(body)));
      continued = chunk.length > 0 && !chunk[chunk.length - 1][2];
      this.started = true;
      if (segments.length === 0) break;
    }
    if (eos) this.ended = true;
    return concatBytes(out);
  }

  #page(flags, granule, lacing, body) {
    const page = new Uint8Array(27 + lacing.length + body.length);
    const view = new DataView(page.buffer);
    page.set(CAPTURE, 0);
    view.setUint8(4, 0); // version
    view.setUint8(5, flags);
    view.setBigInt64(6, BigInt(granule), true); // -1: no packet ends on this page
    view.setUint32(14, this.serial, true);
    view.setUint32(18, this.sequence++, true);
    view.setUint32(22, 0, true); // the CRC is computed over the page with this field zero
    view.setUint8(26, lacing.length);
    page.set(lacing, 27);
    page.set(body, 27 + lacing.length);
    view.setUint32(22, oggCrc(page), true);
    return page;
  }
}

// Reads pages from byte chunks cut anywhere. `push(chunk)` returns the packets completed by it, as
// {packet, granule, serial, bos, eos}. A page with a wrong CRC or version is skipped and counted in
// `errors`; garbage before a page is skipped up to the next "OggS".
export class OggReader {
  constructor() {
    this.buffer = new Uint8Array(0); // the start of an incomplete page
    this.waiting = []; // chunks received since, not yet parsed
    this.waitingBytes = 0;
    this.needed = 27; // bytes to wait for before parsing again
    this.partial = []; // pieces of a packet continued on the next page
    this.errors = 0;
    this.pages = 0;
    this.lastError = "";
    this.resyncing = false;
  }

  push(chunk) {
    // Chunks wait in a list until the page they belong to is complete, so bytes fed one at a time cost no
    // more than whole pages (no copy of the growing buffer per chunk).
    this.waiting.push(new Uint8Array(chunk));
    this.waitingBytes += chunk.length;
    if (this.waitingBytes < this.needed) return [];
    const buf = concatBytes([this.buffer, ...this.waiting]);
    this.waiting = [];
    this.waitingBytes = 0;
    const packets = [];
    let at = 0;
    let needed = 27;
    while (buf.length - at >= 27) {
      if (!(buf[at] === 0x4f && buf[at + 1] === 0x67 && buf[at + 2] === 0x67 && buf[at + 3] === 0x53)) {
        const next = this.#find(buf, at + 1);
        if (!this.resyncing) this.#fail(`${next - at} bytes that are not an Ogg page skipped`);
        this.resyncing = true; // one error per damaged stretch, however it arrives
        at = next;
        continue;
      }
      const nseg = buf[at + 26];
      const headerLen = 27 + nseg;
      needed = headerLen;
      if (buf.length - at < headerLen) break;
      let bodyLen = 0;
      for (let i = 0; i < nseg; i++) bodyLen += buf[at + 27 + i];
      needed = headerLen + bodyLen;
      if (buf.length - at < headerLen + bodyLen) break;
      needed = 27;
      const page = buf.slice(at, at + headerLen + bodyLen);
      const view = new DataView(page.buffer);
      const crc = view.getUint32(22, true);
      view.setUint32(22, 0, true);
      if (page[4] !== 0 || oggCrc(page) !== crc) {
        // A damaged page: skip its capture pattern and look for the next one.
        this.#fail(page[4] !== 0 ? `Ogg page version ${page[4]}` : "an Ogg page with a wrong CRC");
        this.partial = [];
        this.resyncing = true;
        at += 4;
        continue;
      }
      at += headerLen + bodyLen;
      this.pages++;
      this.resyncing = false;
      packets.push(...this.#packets(page, view, nseg, headerLen));
    }
    this.buffer = buf.slice(at);
    this.needed = needed - this.buffer.length; // new bytes needed before parsing is worth trying again
    return packets;
  }

  #find(buf, from) {
    for (let i = from; i + 4 <= buf.length; i++) {
      if (buf[i] === 0x4f && buf[i + 1] === 0x67 && buf[i + 2] === 0x67 && buf[i + 3] === 0x53) return i;
    }
    return Math.max(from, buf.length - 3); // keep a possible partial "OggS" at the end
  }

  #fail(message) {
    this.errors++;
    this.lastError = message;
  }

  #packets(page, view, nseg, headerLen) {
    const flags = page[5];
    const granule = view.getBigInt64(6, true);
    const serial = view.getUint32(14, true);
    if (!(flags & FLAG_CONTINUED)) this.partial = []; // a continuation that never came is dropped
    const out = [];
    let at = headerLen;
    let bos = (flags & FLAG_BOS) !== 0;
    for (let i = 0; i < nseg; i++) {
      const len = page[27 + i];
      this.partial.push(page.subarray(at, at + len));
      at += len;
      if (len < 255) {
        out.push({ packet: concatBytes(this.partial), granule, serial, bos, eos: false });
        this.partial = [];
        bos = false;
      }
    }
    if (out.length && flags & FLAG_EOS) out[out.length - 1].eos = true;
    return out;
  }
}
