"""Training a small SentencePiece text tokenizer on a dataset's words (nanomoshi, docs/nanomoshi.md).

The text comes from the sidecars of JSONL manifests (data.md): each conversation's words, one line per speaker
(Moshi's `SPEAKER_MAIN` words and the user's), so the vocabulary covers what both sides say. The model has
Kyutai's special ids, which our LM config expects (lm/config.py, FACTS.md): id 0 `<unk>` doubles as EPAD
(`text_end_padding_id` 0), 1 `<s>`, 2 `</s>`, 3 `<pad>` = PAD (`text_padding_id` 3). Byte fallback is on, so no
text ever maps to `<unk>` (which would read as EPAD): an unseen character becomes its UTF-8 bytes.

    python -m openmoshi.data.tokenizer MANIFEST [MANIFEST ...] --out tokenizer.model [--vocab-size 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3  # Kyutai's: EPAD = 0 (<unk>), PAD = 3 (<pad>)
MIN_VOCAB = 256 + 4 + 8  # the 256 byte pieces, the 4 specials, a few pieces of text


class TokenizerError(ValueError):
    """Bad input to the tokenizer trainer (no manifest, no words, a vocabulary too small...)."""


def manifest_lines(manifest: str | Path) -> Iterator[str]:
    """One line of text per speaker of each conversation listed in `manifest` (its sidecars' words, in order).
    Entries without a sidecar (text files, unfinished conversations) are skipped."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise TokenizerError(f"{manifest}: no such manifest")
    for n, raw in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            path = Path(entry["path"])
        except (ValueError, KeyError, TypeError):
            raise TokenizerError(f"{manifest}:{n}: not a manifest line with a 'path'") from None
        path = path if path.is_absolute() else manifest.parent / path
        sidecar = path.with_suffix(".json")
        if path.suffix == ".txt" and path.is_file():
            yield from (line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
            continue
        if not sidecar.is_file():
            continue
        try:
            alignments = json.loads(sidecar.read_text(encoding="utf-8"))["alignments"]
            by_speaker: dict[str, list[str]] = {}
            for item in alignments:
                speaker = item[2] if len(item) > 2 else "SPEAKER_MAIN"
                by_speaker.setdefault(str(speaker), []).append(str(item[0]).strip())
        except (ValueError, KeyError, TypeError, IndexError):
            raise TokenizerError(f"{sidecar}: not a sidecar of word alignments") from None
        for words in by_speaker.values():
            line = " ".join(w for w in words if w)
            if line:
                yield line


def train_tokenizer(lines: Iterable[str], out: str | Path, vocab_size: int = 2000, seed: int = 0) -> Path:
    """Train a unigram SentencePiece model of `vocab_size` pieces on `lines`; write it to `out` (atomically)."""
    import sentencepiece as spm

    from ..io_safety import write_bytes

    if vocab_size < MIN_VOCAB:
        raise TokenizerError(f"vocab size {vocab_size} is too small (at least {MIN_VOCAB}: 256 byte pieces + 4 "
                             "special ids + text)")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="spm-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        count = 0
        with corpus.open("w", encoding="utf-8") as f:
            for line in lines:
                line = " ".join(line.split())
                if line:
                    f.write(line + "\n")
                    count += 1
        if count == 0:
            raise TokenizerError("no text to train the tokenizer on (no sidecar words in the manifests)")
        prefix = Path(tmp) / "spm"
        if hasattr(spm, "set_random_generator_seed"):
            spm.set_random_generator_seed(seed)  # the same corpus and seed -> the same model
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
                character_coverage=1.0, byte_fallback=True, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                pad_id=PAD_ID, num_threads=1, minloglevel=2, hard_vocab_limit=False,
                input_sentence_size=2_000_000, shuffle_input_sentence=True,
            )
        except RuntimeError as err:  # e.g. a vocabulary larger than the text allows
            raise TokenizerError(f"SentencePiece could not train on {count} lines: {err}") from None
        write_bytes(out, (prefix.with_suffix(".model")).read_bytes())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openmoshi.data.tokenizer", description=__doc__.split("\n")[0])
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST", help="JSONL manifests (their sidecars' words)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the SentencePiece model to write")
    parser.add_argument("--vocab-size", type=int, default=2000, metavar="N", help="pieces (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if any(out.resolve() == Path(m).resolve() for m in args.manifests):
        print("error: --out is one of the manifests", file=sys.stderr)
        return 2
    try:
        lines = [line for m in args.manifests for line in manifest_lines(m)]
        train_tokenizer(lines, out, args.vocab_size, args.seed)
    except TokenizerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out))
    print(f"tokenizer: {sp.vocab_size()} pieces from {len(lines)} lines -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
