// Opus in the browser through WebCodecs (AudioEncoder / AudioDecoder), framed in Ogg by ogg.js.
//
// OpusSender: 24 kHz mono float samples in, Ogg/Opus bytes out (the header pages come first, with the first
// audio page). OpusReceiver: Ogg/Opus bytes in (chunks cut anywhere), float samples out.

import { OggReader, OggWriter, concatBytes, isOpusTags, opusHead, opusTags, parseOpusHead } from "./ogg.js";

export const SAMPLE_RATE = 24000; // Moshi's rate, both directions
const FRAME_US = 20000; // Opus frames of 20 ms
const PACKETS_PER_PAGE = 2; // one page every 40 ms: ~15 bytes of framing per packet, little added delay
const ENCODER_CONFIG = {
  codec: "opus",
  sampleRate: SAMPLE_RATE,
  numberOfChannels: 1,
  bitrate: 32000,
  opus: { frameDuration: FRAME_US },
};

// A reason (in words) why this browser cannot run the page, or "" when it can.
export async function opusSupport() {
  if (typeof AudioEncoder === "undefined" || typeof AudioDecoder === "undefined") {
    return "this browser has no WebCodecs audio (AudioEncoder/AudioDecoder); use a recent Chrome, Edge, Firefox or Safari";
  }
  try {
    const enc = await AudioEncoder.isConfigSupported(ENCODER_CONFIG);
    const dec = await AudioDecoder.isConfigSupported({ codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1 });
    if (!enc.supported) return "this browser's WebCodecs cannot encode Opus at 24 kHz";
    if (!dec.supported) return "this browser's WebCodecs cannot decode Opus";
  } catch (err) {
    return `WebCodecs refused the Opus settings: ${err.message || err}`;
  }
  return "";
}

function preSkipOf(description) {
  if (!description) return null;
  const bytes = description instanceof ArrayBuffer
    ? new Uint8Array(description)
    : new Uint8Array(description.buffer, description.byteOffset, description.byteLength);
  const head = parseOpusHead(bytes);
  return head ? head.preSkip : null;
}

export class OpusSender {
  // onBytes(Uint8Array): one chunk of the Ogg stream to send; onError(message).
  constructor(onBytes, onError) {
    this.onBytes = onBytes;
    this.onError = onError;
    this.ogg = new OggWriter();
    this.pending = [];
    this.granule = 0; // Ogg/Opus positions count 48 kHz samples whatever the input rate
    this.timestampUs = 0;
    this.headerSent = false;
    this.packets = 0;
    this.bytes = 0;
    this.encoder = new AudioEncoder({
      output: (chunk, meta) => this.#output(chunk, meta),
      error: (err) => this.onError(`Opus encoder: ${err.message || err}`),
    });
    this.encoder.configure(ENCODER_CONFIG);
  }

  // samples: Float32Array at 24 kHz, mono.
  encode(samples) {
    if (this.encoder.state !== "configured" || samples.length === 0) return;
    const data = new AudioData({
      format: "f32",
      sampleRate: SAMPLE_RATE,
      numberOfFrames: samples.length,
      numberOfChannels: 1,
      timestamp: this.timestampUs,
      data: samples,
    });
    this.timestampUs += (samples.length * 1e6) / SAMPLE_RATE;
    this.encoder.encode(data);
    data.close();
  }

  #output(chunk, meta) {
    const packet = new Uint8Array(chunk.byteLength);
    chunk.copyTo(packet);
    const parts = [];
    if (!this.headerSent) {
      // RFC 7845: OpusHead alone on the first page, OpusTags on the second, audio from the third on.
      const preSkip = preSkipOf(meta && meta.decoderConfig && meta.decoderConfig.description) ?? 312;
      parts.push(this.ogg.pages([opusHead({ channels: 1, preSkip, inputRate: SAMPLE_RATE })], 0));
      parts.push(this.ogg.pages([opusTags()], 0));
      this.headerSent = true;
    }
    this.granule += Math.round(((chunk.duration || FRAME_US) * 48000) / 1e6);
    this.pending.push(packet);
    this.packets++;
    if (this.pending.length >= PACKETS_PER_PAGE) {
      parts.push(this.ogg.pages(this.pending, this.granule));
      this.pending = [];
    }
    if (parts.length) {
      const bytes = concatBytes(parts);
      this.bytes += bytes.length;
      this.onBytes(bytes);
    }
  }

  close() {
    if (this.encoder.state !== "closed") this.encoder.close();
  }
}

export class OpusReceiver {
  // onPcm(Float32Array, sampleRate): decoded mono samples; onError(message).
  constructor(onPcm, onError) {
    this.onPcm = onPcm;
    this.onError = onError;
    this.ogg = new OggReader();
    this.head = null;
    this.expectHead = true;
    this.decoder = null;
    this.timestampUs = 0;
    this.packets = 0;
    this.decodedFrames = 0;
    this.decodeErrors = 0;
  }

  push(bytes) {
    const errorsBefore = this.ogg.errors;
    for (const { packet, bos } of this.ogg.push(bytes)) {
      if (bos) this.expectHead = true; // a new (possibly chained) stream starts with its headers
      if (this.expectHead) {
        const head = parseOpusHead(packet);
        this.expectHead = false;
        if (head) {
          this.#configure(head, packet);
          continue;
        }
      }
      if (isOpusTags(packet) || packet.length === 0) continue;
      this.#decode(packet);
    }
    if (this.ogg.errors > errorsBefore) this.onError(`Moshi's audio stream: ${this.ogg.lastError}`);
  }

  #configure(head, packet) {
    this.head = { head, packet };
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    this.decoder = null;
  }

  #makeDecoder() {
    const decoder = new AudioDecoder({
      output: (data) => this.#output(data),
      error: (err) => {
        this.decodeErrors++;
        this.onError(`Opus decoder: ${err.message || err}`);
      },
    });
    const config = { codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1 };
    if (this.head) {
      config.numberOfChannels = this.head.head.channels;
      config.description = this.head.packet;
    }
    decoder.configure(config);
    return decoder;
  }

  #decode(packet) {
    if (!this.decoder || this.decoder.state === "closed") this.decoder = this.#makeDecoder();
    this.packets++;
    const chunk = new EncodedAudioChunk({ type: "key", timestamp: this.timestampUs, data: packet });
    this.timestampUs += FRAME_US;
    this.decoder.decode(chunk);
  }

  #output(data) {
    const frames = data.numberOfFrames;
    const samples = new Float32Array(frames);
    data.copyTo(samples, { planeIndex: 0, format: "f32-planar" }); // the first channel (Moshi is mono)
    const rate = data.sampleRate;
    data.close();
    this.decodedFrames += frames;
    this.onPcm(samples, rate);
  }

  close() {
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
  }
}
