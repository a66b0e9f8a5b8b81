// Small audio helpers for the page: a streaming resampler and the stereo wav recorder.

// Linear interpolation between rates, chunk by chunk (the position carries over between chunks). Speech at
// these rates needs no more: both sides are band-limited to 12 kHz by Opus at 24 kHz.
export class Resampler {
  constructor(fromRate, toRate) {
    this.step = fromRate / toRate;
    this.identity = fromRate === toRate;
    this.pos = 0; // position of the next output sample, relative to the first sample of the next chunk
    this.last = 0; // the previous chunk's last sample (index -1)
  }

  process(input) {
    if (this.identity) return input;
    const out = [];
    let pos = this.pos;
    while (pos < input.length - 1 + 1e-9) {
      const i = Math.floor(pos);
      const frac = pos - i;
      const a = i < 0 ? this.last : input[i];
      const b = i + 1 < input.length ? input[i + 1] : a;
      out.push(a + (b - a) * frac);
      pos += this.step;
    }
    this.pos = pos - input.length;
    if (input.length) this.last = input[input.length - 1];
    return Float32Array.from(out);
  }
}

const clip16 = (x) => Math.max(-32768, Math.min(32767, Math.round(x * 32767)));

// Keeps the conversation as 16-bit stereo (channel 0 = Moshi, channel 1 = the user, as openmoshi's datasets)
// and makes a RIFF/WAVE file of it.
export class StereoRecorder {
  constructor(sampleRate) {
    this.sampleRate = sampleRate;
    this.chunks = [];
    this.frames = 0;
  }

  add(left, right) {
    const n = Math.min(left.length, right.length);
    const chunk = new Int16Array(2 * n);
    for (let i = 0; i < n; i++) {
      chunk[2 * i] = clip16(left[i]);
      chunk[2 * i + 1] = clip16(right[i]);
    }
    this.chunks.push(chunk);
    this.frames += n;
  }

  get seconds() {
    return this.frames / this.sampleRate;
  }

  toBlob() {
    const dataBytes = this.frames * 4;
    const header = new ArrayBuffer(44);
    const v = new DataView(header);
    const tag = (at, s) => [...s].forEach((c, i) => v.setUint8(at + i, c.charCodeAt(0)));
    tag(0, "RIFF");
    v.setUint32(4, 36 + dataBytes, true);
    tag(8, "WAVE");
    tag(12, "fmt ");
    v.setUint32(16, 16, true);
    v.setUint16(20, 1, true); // PCM
    v.setUint16(22, 2, true); // channels
    v.setUint32(24, this.sampleRate, true);
    v.setUint32(28, this.sampleRate * 4, true); // bytes per second
    v.setUint16(32, 4, true); // bytes per frame
    v.setUint16(34, 16, true); // bits per sample
    tag(36, "data");
    v.setUint32(40, dataBytes, true);
    return new Blob([header, ...this.chunks], { type: "audio/wav" });
  }
}
