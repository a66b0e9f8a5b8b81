"""The codec report: every clip of a folder through a Mimi at each number of codebooks asked for, scored, then
written as `report.md` with PNG plots (`quality_vs_bitrate.png`, `spectrogram.png`) and `metrics.json`.

Per clip and K: mel distance, SI-SDR, PESQ (wide band), STOI and, with a recogniser, the transcript of the
reconstruction. Per K the report gives the bitrate, the mean of each metric over the clips it could score, and
the corpus word error rate (all edits / all reference words). The reference text of a clip is its sidecar
`NAME.txt` when there is one, else the recogniser's transcript of the original (then the original's own WER is
0 by construction; with given texts it is reported as the recogniser's floor).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import codec_metrics as cm
from .plots import figure_png

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
METRICS = ("mel_distance", "si_sdr", "pesq", "stoi")
LABELS = {"mel_distance": "mel distance (lower is better)", "si_sdr": "SI-SDR, dB", "pesq": "PESQ (wide band)",
          "stoi": "STOI", "wer": "word error rate"}


def find_audio(source: Path) -> list[Path]:
    """The audio files of a folder (recursively, sorted) or a single file; ValueError when there are none."""
    if not source.exists():
        raise ValueError(f"audio not found: {source}")
    if source.is_file():
        return [source]
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {source}")
    return files


@dataclass
class ClipScores:
    mel_distance: float
    si_sdr: float
    pesq: float
    stoi: float
    transcript: str | None = None
    errors: int | None = None  # word edits against the reference text
    wer: float | None = None


@dataclass
class ClipResult:
    name: str
    seconds: float
    reference_text: str | None
    reference_source: str  # "sidecar", "recogniser" or "none"
    original_transcript: str | None
    reference_words: int
    by_k: dict[int, ClipScores] = field(default_factory=dict)


@dataclass
class Summary:
    num_codebooks: int
    bitrate: float
    means: dict[str, float]
    scored: dict[str, int]  # clips that gave a finite value, per metric
    wer: float | None


@dataclass
class CodecReport:
    model: str
    sample_rate: int
    frame_rate: float
    codebook_size: int
    clips: list[ClipResult]
    summary: list[Summary]
    original_wer: float | None  # the recogniser on the originals vs the sidecar texts (None without texts)


def score(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> ClipScores:
    return ClipScores(cm.mel_distance(ref, est, sample_rate), cm.si_sdr(ref, est), cm.pesq_wb(ref, est, sample_rate),
                      cm.stoi(ref, est, sample_rate))


def _finite_mean(values: Sequence[float]) -> tuple[float, int]:
    good = [v for v in values if v is not None and math.isfinite(v)]
    return (float(np.mean(good)) if good else float("nan")), len(good)


def evaluate(files: Sequence[Path], ks: Sequence[int], codec: Callable[[np.ndarray, int], np.ndarray],
             sample_rate: int, frame_rate: float, codebook_size: int, model: str,
             read: Callable[[Path], np.ndarray], asr=None, progress: bool = True,
             keep_audio: Callable[[str, int | None, np.ndarray], None] | None = None) -> CodecReport:
    """Score every file at every K. `codec(audio, k)` -> reconstruction; `read(path)` -> mono audio at
    `sample_rate`; `asr` has `transcribe(audio, sample_rate) -> str` (None: no WER); `keep_audio(name, k, audio)`
    is called for the first clip (k None: the original)."""
    from tqdm import tqdm

    clips = []
    with tqdm(total=len(files) * len(ks), unit="clip", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for index, path in enumerate(files):
            audio = read(path)
            sidecar = path.with_suffix(".txt")
            text, source, transcript = None, "none", None
            if sidecar.is_file():
                text, source = sidecar.read_text(encoding="utf-8").strip(), "sidecar"
            if asr is not None:
                transcript = asr.transcribe(audio, sample_rate)
                if text is None:
                    text, source = transcript, "recogniser"
            clip = ClipResult(path.name, len(audio) / sample_rate, text, source, transcript,
                              len(cm.normalize_words(text)) if text else 0)
            if index == 0 and keep_audio is not None:
                keep_audio(path.stem, None, audio)
            for k in ks:
                recon = codec(audio, k)[:len(audio)]
                scores = score(audio, recon, sample_rate)
                if asr is not None and text is not None:
                    scores.transcript = asr.transcribe(recon, sample_rate)
                    scores.errors = cm.word_errors(text, scores.transcript)[0]
                    scores.wer = scores.errors / clip.reference_words if clip.reference_words else float("nan")
                clip.by_k[k] = scores
                if index == 0 and keep_audio is not None:
                    keep_audio(path.stem, k, recon)
                bar.update(1)
            clips.append(clip)
    summary = []
    for k in ks:
        means, scored = {}, {}
        for m in METRICS:
            means[m], scored[m] = _finite_mean([getattr(c.by_k[k], m) for c in clips])
        words = sum(c.reference_words for c in clips if c.by_k[k].errors is not None)
        edits = sum(c.by_k[k].errors for c in clips if c.by_k[k].errors is not None)
        summary.append(Summary(k, cm.bitrate(k, codebook_size, frame_rate), means, scored,
                               edits / words if words else None))
    original_wer = None
    with_text = [c for c in clips if c.reference_source == "sidecar" and c.original_transcript is not None]
    if with_text and sum(c.reference_words for c in with_text):
        edits = sum(cm.word_errors(c.reference_text or "", c.original_transcript or "")[0] for c in with_text)
        original_wer = edits / sum(c.reference_words for c in with_text)
    return CodecReport(model, sample_rate, frame_rate, codebook_size, clips, summary, original_wer)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def report_json(report: CodecReport) -> str:
    """The figures as JSON (NaN -> null)."""
    return json.dumps(_json_safe(asdict(report)), indent=2, ensure_ascii=False) + "\n"


def plot_quality(report: CodecReport) -> bytes:
    """Each metric (and the WER when computed) against the bitrate, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*METRICS] + (["wer"] if any(s.wer is not None for s in report.summary) else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0))
    rates = [s.bitrate / 1000 for s in report.summary]
    for ax, m in zip(np.atleast_1d(axes), panels, strict=True):
        values = [(s.wer if s.wer is not None else float("nan")) if m == "wer" else s.means[m]
                  for s in report.summary]
        ax.plot(rates, values, "o-")
        for rate, value, s in zip(rates, values, report.summary, strict=True):
            ax.annotate(f"K={s.num_codebooks}", (rate, value), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))
        ax.set_xlabel("bitrate, kbps")
        ax.set_title(LABELS[m], fontsize=9)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False)
    fig.suptitle(f"{report.model}: quality against bitrate ({len(report.clips)} clips)", fontsize=10, y=1.04)
    return figure_png(fig, dpi=110)


def plot_spectrograms(name: str, original: np.ndarray, reconstructions: dict[int, np.ndarray],
                      sample_rate: int) -> bytes:
    """Log-mel spectrograms of one clip: the original, then its reconstruction at each K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..train.codec_losses import MelSpectrogram

    mel = MelSpectrogram(1024, 80, sample_rate)
    rows = [("original", original)] + [(f"reconstruction, K={k}", a) for k, a in reconstructions.items()]
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.9 * len(rows)), sharex=True)
    for ax, (title, audio) in zip(np.atleast_1d(axes), rows, strict=True):
        with torch.no_grad():
            spec = mel(torch.from_numpy(np.asarray(audio, np.float32))[None, None])[0].clamp_min(1e-5).log10()
        seconds = len(audio) / sample_rate
        ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, spec.shape[0]),
                  vmin=-5, vmax=float(spec.max()))
        ax.set_title(f"{name}: {title}", fontsize=9)
        ax.set_ylabel("mel band")
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    fig.tight_layout()
    return figure_png(fig, dpi=110)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def report_markdown(report: CodecReport, spectrogram_clip: str | None) -> str:
    lines = [f"# Codec report: {report.model}", "",
             f"{len(report.clips)} clips, {sum(c.seconds for c in report.clips):.1f} s of audio at "
             f"{report.sample_rate} Hz; {report.frame_rate:g} frames/s, {report.codebook_size} entries per codebook.",
             "", "| codebooks | bitrate (kbps) | mel distance | SI-SDR (dB) | PESQ-WB | STOI | WER |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for s in report.summary:
        lines.append(f"| {s.num_codebooks} | {s.bitrate / 1000:.3f} | {_fmt(s.means['mel_distance'])} | "
                     f"{_fmt(s.means['si_sdr'], 2)} | {_fmt(s.means['pesq'], 2)} | {_fmt(s.means['stoi'])} | "
                     f"{_fmt(s.wer)} |")
    lines.append("")
    partial = {m: s.scored[m] for s in report.summary for m in METRICS if s.scored[m] < len(report.clips)}
    if partial:
        lines.append("Not every clip could be scored (PESQ finds no speech in silence or noise): "
                     + ", ".join(f"{m} on {n}/{len(report.clips)}" for m, n in partial.items()) + ".")
        lines.append("")
    sources = {c.reference_source for c in report.clips}
    if "recogniser" in sources:
        lines.append("WER: the reconstruction's transcript (Whisper tiny.en) against the original's transcript "
                     "by the same recogniser (clips without a sidecar .txt).")
    if "sidecar" in sources:
        lines.append(f"WER against the sidecar texts; the recogniser on the originals scores "
                     f"{_fmt(report.original_wer)} (its own floor).")
    if sources == {"none"}:
        lines.append("No word error rate (no recogniser: --no-wer).")
    lines += ["", "Mel distance: the training's multi-scale log-mel L1 (0 = identical). SI-SDR: scale-invariant "
              "signal-to-distortion ratio. PESQ: ITU-T P.862.2 wide band at 16 kHz. STOI: short-time objective "
              "intelligibility.", "", "![quality against bitrate](quality_vs_bitrate.png)", ""]
    if spectrogram_clip:
        lines += [f"![spectrograms of {spectrogram_clip}](spectrogram.png)", ""]
    lines += ["## Clips", "", "| clip | seconds | " + " | ".join(f"PESQ K={s.num_codebooks}" for s in report.summary)
              + " |", "|---|---:|" + "---:|" * len(report.summary)]
    for c in report.clips:
        lines.append(f"| {c.name.replace('|', '/')} | {c.seconds:.2f} | "
                     + " | ".join(_fmt(c.by_k[s.num_codebooks].pesq, 2) for s in report.summary) + " |")
    return "\n".join(lines) + "\n"
