// The page's audio thread: one AudioWorklet node that takes the microphone in and plays Moshi out.
//
// Doing both in one node puts them on one clock: every 128-sample render quantum sees the user's samples and
// the Moshi samples played at that instant, so the recording (Moshi left, user right) is aligned as heard.
// Moshi's audio waits in a small jitter buffer: playback starts once `targetMs` is buffered, an underrun plays
// silence and buffers again, and a backlog above `maxMs` (a stalled tab, a burst) is dropped down to the target.
// Every `batchFrames` samples the node posts {mic, out, levels, counters} to the page.

class DuplexProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.target = Math.round(((opts.targetMs ?? 100) * sampleRate) / 1000);
    this.max = Math.max(this.target * 2, Math.round(((opts.maxMs ?? 500) * sampleRate) / 1000));
    this.batch = opts.batchFrames ?? 512;
    this.ring = new Float32Array(sampleRate * 4);
    this.read = 0;
    this.fill = 0;
    this.playing = false;
    this.played = 0;
    this.underruns = 0;
    this.dropped = 0;
    this.#newBatch();
    this.port.onmessage = (event) => this.#message(event.data);
  }

  #newBatch() {
    this.mic = new Float32Array(this.batch);
    this.out = new Float32Array(this.batch);
    this.at = 0;
  }

  #message(msg) {
    if (msg.type === "play") {
      const samples = msg.samples;
      const cap = this.ring.length;
      for (let i = 0; i < samples.length; i++) {
        if (this.fill === cap) {
          this.read = (this.read + 1) % cap; // full: forget the oldest sample
          this.fill--;
          this.dropped++;
        }
        this.ring[(this.read + this.fill) % cap] = samples[i];
        this.fill++;
      }
    } else if (msg.type === "reset") {
      this.read = 0;
      this.fill = 0;
      this.playing = false;
    }
  }

  process(inputs, outputs) {
    const input = inputs[0] && inputs[0][0];
    const output = outputs[0];
    const frames = output[0].length;
    const out = output[0];
    const cap = this.ring.length;
    if (this.fill > this.max) {
      const drop = this.fill - this.target;
      this.read = (this.read + drop) % cap;
      this.fill -= drop;
      this.dropped += drop;
    }
    if (!this.playing && this.fill >= this.target) this.playing = true;
    if (this.playing) {
      const take = Math.min(frames, this.fill);
      for (let i = 0; i < take; i++) out[i] = this.ring[(this.read + i) % cap];
      this.read = (this.read + take) % cap;
      this.fill -= take;
      this.played += take;
      if (take < frames) {
        this.playing = false; // ran dry: silence until the buffer holds the target again
        this.underruns++;
      }
    }
    for (let c = 1; c < output.length; c++) output[c].set(out);
    for (let i = 0; i < frames; i++) {
      this.mic[this.at] = input ? input[i] : 0;
      this.out[this.at] = out[i];
      if (++this.at === this.batch) this.#post();
    }
    return true;
  }

  #post() {
    const rms = (x) => {
      let s = 0;
      for (let i = 0; i < x.length; i++) s += x[i] * x[i];
      return Math.sqrt(s / x.length);
    };
    this.port.postMessage(
      {
        mic: this.mic,
        out: this.out,
        micLevel: rms(this.mic),
        outLevel: rms(this.out),
        played: this.played,
        underruns: this.underruns,
        dropped: this.dropped,
        buffered: this.fill,
      },
      [this.mic.buffer, this.out.buffer],
    );
    this.#newBatch();
  }
}

registerProcessor("openmoshi-duplex", DuplexProcessor);
