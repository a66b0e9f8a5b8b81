#!/usr/bin/env bash
# nanomoshi from nothing, on CPU (docs/nanomoshi.md): data -> codec -> codes -> snapshot -> tokenizer -> assets
# -> prepare -> lm-pre -> lm-post -> export. Every stage skips itself when its output is complete and resumes its
# run from the newest checkpoint when it is partial, so the same command continues across sessions. The codec
# trains in the background: once its encoder is frozen (`codes`: codec/export-frozen/) the LM stages run beside
# its decoder-only phase, on the other threads; `export` waits for it.
#
#   scripts/train_nanomoshi.sh [--data-root DIR] [--eval-root DIR] [--out DIR] [--only STAGE ...]
#                              [--skip STAGE ...] [--codec-steps N] [--pre-steps N] [--post-steps N]
#                              [--vocab-size N] [--hours H] [--min-hours H] [--threads N] [--dry-run]
#
# Outputs under --out (default /work/data/nanomoshi): codec/ (the codec run), data/train.jsonl (the frozen list
# of conversations the LM trains on) and its prepared/ codes, tokenizer.model, assets/ (codec + tokenizer in
# Kyutai's layout), lm-pre/ and lm-post/ (LM runs), export/ (the model folder, bf16), pipeline.log (one line per
# stage with its time), logs/STAGE.log (each stage's output).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${OPENMOSHI_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
STAGES=(data codec codes snapshot tokenizer assets prepare lm-pre lm-post export)
DATA_ROOT=/work/data/synth-v1
EVAL_ROOT=/work/data/synth-v1-eval
OUT=/work/data/nanomoshi
CODEC_STEPS=24000
PRE_STEPS=800
POST_STEPS=1600
VOCAB=1024
HOURS=20
MIN_HOURS=0
THREADS=2
DRY=0
ONLY=()
SKIP=()

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "train_nanomoshi: error: $*" >&2; exit 2; }
is_stage() { local s; for s in "${STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
need() { [ $# -ge 2 ] && [ -n "$2" ] && [[ "$2" != --* ]] || die "$1 needs a value"; }
int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --data-root) need "$@"; DATA_ROOT="$2"; shift 2 ;;
    --eval-root) need "$@"; EVAL_ROOT="$2"; shift 2 ;;
    --out) need "$@"; OUT="$2"; shift 2 ;;
    --only) need "$@"; is_stage "$2" || die "unknown stage '$2' (stages: ${STAGES[*]})"; ONLY+=("$2"); shift 2 ;;
    --skip) need "$@"; is_stage "$2" || die "unknown stage '$2' (stages: ${STAGES[*]})"; SKIP+=("$2"); shift 2 ;;
    --codec-steps) need "$@"; int "$1" "$2"; CODEC_STEPS="$2"; shift 2 ;;
    --pre-steps) need "$@"; int "$1" "$2"; PRE_STEPS="$2"; shift 2 ;;
    --post-steps) need "$@"; int "$1" "$2"; POST_STEPS="$2"; shift 2 ;;
    --vocab-size) need "$@"; int "$1" "$2"; VOCAB="$2"; shift 2 ;;
    --hours) need "$@"; [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--hours must be a number"; HOURS="$2"; shift 2 ;;
    --min-hours) need "$@"; [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--min-hours must be a number"; MIN_HOURS="$2"; shift 2 ;;
    --threads) need "$@"; int "$1" "$2"; THREADS="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "$VOCAB" -le 1024 ] || die "--vocab-size must be <= 1024 (the nano LM's text_card)"
DATA_ROOT="$(realpath -m -- "$DATA_ROOT")"; EVAL_ROOT="$(realpath -m -- "$EVAL_ROOT")"; OUT="$(realpath -m -- "$OUT")"
case "$OUT/" in "$DATA_ROOT/"*|"$EVAL_ROOT/"*) die "--out may not lie inside the data folders" ;; esac

CLI=("$PY" -m openmoshi.cli)
MANIFEST="$DATA_ROOT/manifest.jsonl"
EVAL_MANIFEST="$EVAL_ROOT/manifest.jsonl"
TRAIN_LIST="$OUT/data/train.jsonl"

log() { local line; line="$(date -u +%FT%TZ) $*"; echo "$line"; [ "$DRY" = 1 ] || echo "$line" >> "$OUT/pipeline.log"; }
wanted() {
  local s
  if [ ${#ONLY[@]} -gt 0 ]; then
    for s in "${ONLY[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1
  fi
  for s in "${SKIP[@]+"${SKIP[@]}"}"; do [ "$s" = "$1" ] && return 1; done
  return 0
}
# A run folder with a complete checkpoint resumes; one without (killed before its first save) starts over.
# (A checkpoint is written as .step_N.partial/ and renamed to step_N/ once complete.)
has_checkpoint() { compgen -G "$1/checkpoints/step_*" >/dev/null; }
lines() { if [ -f "$1" ]; then grep -c . "$1" || true; else echo 0; fi; }

# ---- completion tests (a stage is skipped when its test passes) ------------------------------------------------
done_data() { [ "$(lines "$MANIFEST")" -gt 0 ]; }
done_codec() { [ -f "$OUT/codec/export/mimi.safetensors" ]; }
# the codec whose codes the LM learns: the frozen encoder's export (every later export makes the same codes)
codes_export() { if [ -f "$OUT/codec/export-frozen/mimi.safetensors" ]; then echo "$OUT/codec/export-frozen";
                 else echo "$OUT/codec/export"; fi; }
done_codes() { [ -f "$(codes_export)/mimi.safetensors" ]; }
done_snapshot() { [ "$(lines "$TRAIN_LIST")" -gt 0 ]; }
done_tokenizer() { [ -f "$OUT/tokenizer.model" ]; }
done_assets() { [ -f "$OUT/assets/config.json" ] && [ -f "$OUT/assets/mimi.safetensors" ] && [ -f "$OUT/assets/tokenizer.model" ]; }
done_prepare() { [ -f "$OUT/data/train.prepared/index.json" ]; }
done_lm-pre() { [ -f "$OUT/lm-pre/export/model.safetensors" ]; }
done_lm-post() { [ -f "$OUT/lm-post/export/model.safetensors" ]; }
done_export() { [ -f "$OUT/export/model.safetensors" ] && [ -f "$OUT/export/config.json" ]; }

# ---- the stages ---------------------------------------------------------------------------------------------
run_data() {  # only when the data root holds no conversations yet (an existing set is used as it is)
  nice -n 10 "${CLI[@]}" data synth --out "$DATA_ROOT" --split train --seed 0 --hours "$HOURS" --no-progress
  [ -f "$EVAL_MANIFEST" ] || nice -n 10 "${CLI[@]}" data synth --out "$EVAL_ROOT" --split eval --seed 1 \
    --conversations 150 --no-progress
}

train_run() {  # train_run KIND RUN STEPS ARGS...: a new run, or the resumption of a partial one
  local kind="$1" run="$2" steps="$3"; shift 3
  if has_checkpoint "$run"; then
    "${CLI[@]}" train "$kind" --resume --out "$run" --steps "$steps" --threads "$STAGE_THREADS" --no-progress
  else
    rm -rf "$run"  # our own run folder, killed before its first checkpoint: nothing to keep
    "${CLI[@]}" train "$kind" "$@" --out "$run" --steps "$steps" --threads "$STAGE_THREADS" --no-progress
  fi
}

run_codec() {  # in the background (the driver): 1 thread on a 2-core machine, the LM stages take the rest
  local held=()
  [ -f "$EVAL_MANIFEST" ] && held=(--set "data.held_out=$EVAL_MANIFEST")
  train_run codec "$OUT/codec" "$CODEC_STEPS" nano --data "$MANIFEST" --set teacher=whisper-tiny.en "${held[@]}"
}

manifest_hours() {
  "$PY" -c 'import json, sys; print(sum(json.loads(l)["duration"] for l in open(sys.argv[1]) if l.strip()) / 3600)' "$1"
}

run_codes() {  # wait for the frozen encoder's export (or the whole codec) while the codec trains
  local waited=0
  until done_codes; do
    codec_running || { echo "codes: the codec stage is not running (select it too)"; return 1; }
    [ $((waited % 600)) = 0 ] && echo "codes: waiting for $OUT/codec/export-frozen/ (the codec's encoder to freeze)"
    sleep 2; waited=$((waited + 2))
  done
  echo "codes: $(codes_export)"
}

run_snapshot() {  # freeze the conversations finished now (the generator may still be adding more)
  mkdir -p "$OUT/data"
  local waited=0 have
  # --min-hours: wait (up to 6 h) for a generator still running to reach that much data
  while have="$(manifest_hours "$MANIFEST")" && "$PY" -c "import sys; sys.exit(not $have < $MIN_HOURS)" \
        && [ "$waited" -lt 21600 ]; do
    [ $((waited % 600)) = 0 ] && echo "snapshot: $have h of data, waiting for $MIN_HOURS h"
    sleep 60; waited=$((waited + 60))
  done
  "$PY" - "$MANIFEST" "$TRAIN_LIST" <<'EOF'
import json, os, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
out = []
for raw in src.read_text(encoding="utf-8").splitlines():
    if raw.strip():
        e = json.loads(raw)
        p = Path(e["path"]) if Path(e["path"]).is_absolute() else src.parent / e["path"]
        if p.is_file() and p.with_suffix(".json").is_file():
            out.append(json.dumps({**e, "path": str(p)}))
tmp = dst.with_name(dst.name + ".part")
tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
# leave out what `data check` rejects (`data prepare` would refuse the whole list), and say which
from openmoshi.data.check import check_dataset
result = check_dataset(tmp)
for problem in result.problems:
    print(f"snapshot: left out: {problem}")
out = [x for i, x in enumerate(out) if i not in result.bad_entries]
tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
os.replace(tmp, dst)
hours = sum(json.loads(x)["duration"] for x in out) / 3600
print(f"snapshot: {len(out)} conversations, {hours:.2f} h -> {dst} ({len(result.bad_entries)} left out)")
EOF
}

run_tokenizer() {
  "$PY" -m openmoshi.data.tokenizer "$TRAIN_LIST" --out "$OUT/tokenizer.model" --vocab-size "$VOCAB"
}

run_assets() {  # a model folder holding only the codec and the tokenizer: what `data prepare` and lm-pre read
  mkdir -p "$OUT/assets"
  local codec; codec="$(codes_export)"
  cp "$codec/mimi.safetensors" "$OUT/assets/mimi.safetensors"
  cp "$OUT/tokenizer.model" "$OUT/assets/tokenizer.model"
  "$PY" - "$codec/config.json" "$OUT/assets/config.json" <<'EOF'
import json, os, sys
from openmoshi.train.lm_config import nano
from openmoshi.train.lm_export import kyutai_config
from openmoshi.train.lm_trainer import resolve_model_source
codec = json.load(open(sys.argv[1]))
# the nano LM's shapes and ids (card, text_card, PAD 3, EPAD 0), which `data prepare` checks the files against
cfg = {**kyutai_config(resolve_model_source(nano()).cfg), "mimi_name": "mimi.safetensors",
       "tokenizer_name": "tokenizer.model", "mimi": codec["mimi"]}
open(sys.argv[2] + ".part", "w").write(json.dumps(cfg, indent=1) + "\n")
os.replace(sys.argv[2] + ".part", sys.argv[2])
EOF
}

run_prepare() {
  # Encoding is one process per core (--threads N: N ranks of 1 thread, which beats one process of N threads on
  # Mimi's small per-frame ops), then one call that finds every chunk done and writes the index.
  local pids=() r fail=0
  if [ "$STAGE_THREADS" -gt 1 ]; then
    for ((r = 0; r < STAGE_THREADS; r++)); do
      "${CLI[@]}" data prepare "$TRAIN_LIST" --model "$OUT/assets" --device cpu --no-progress --threads 1 \
        --rank "$r" --world-size "$STAGE_THREADS" & pids+=($!)
    done
    for r in "${pids[@]}"; do wait "$r" || fail=1; done
    [ "$fail" = 0 ] || { echo "prepare: a rank failed (see above)"; return 1; }
  fi
  "${CLI[@]}" data prepare "$TRAIN_LIST" --model "$OUT/assets" --device cpu --no-progress --threads "$STAGE_THREADS"
}

run_lm-pre() {
  train_run lm "$OUT/lm-pre" "$PRE_STEPS" nano --data "$TRAIN_LIST" --set "model.assets=$OUT/assets"
}

run_lm-post() {
  train_run lm "$OUT/lm-post" "$POST_STEPS" nano_post --model "$OUT/lm-pre/export" --data "$TRAIN_LIST"
}

run_export() {  # the shipped folder: the LM in bf16, the codec (its final decoder) and the tokenizer; <= 50 MB
  "$PY" - "$OUT/lm-post/export" "$OUT/export" "$OUT/codec/export" <<'EOF'
import json, os, shutil, sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
tmp = dst.with_name(dst.name + ".part")
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)
cfg = json.loads((src / "config.json").read_text())
tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v)
           for k, v in load_file(str(src / cfg["moshi_name"])).items()}
save_file(tensors, str(tmp / cfg["moshi_name"]))
from openmoshi.train.codec_export import codes_differ
codec = Path(sys.argv[3]) / "mimi.safetensors"  # the codec's final decoder, which must make the LM's codes
differ = codes_differ(src / cfg["mimi_name"], codec)
if differ:
    sys.exit(f"export: {codec} makes other codes than the codec the LM was trained on ({len(differ)} encoder "
             f"tensors differ, e.g. {differ[0]}): the codec changed after `codes`; prepare and train the LM again")
shutil.copyfile(codec, tmp / cfg["mimi_name"])
shutil.copyfile(src / cfg["tokenizer_name"], tmp / cfg["tokenizer_name"])
(tmp / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
from openmoshi.inference.models import load_models
from openmoshi.model_files import resolve_model_files
load_models(resolve_model_files(str(tmp)), device="cpu")  # it loads, or the stage fails
size = sum(f.stat().st_size for f in tmp.iterdir())
if size > 50 * 10**6:  # the issue says 50 MB (tests/test_default_model.py checks the same)
    sys.exit(f"export: {size / 1e6:.1f} MB, over the 50 MB budget")
shutil.rmtree(dst, ignore_errors=True)
os.replace(tmp, dst)
print(f"export: {size / 1e6:.1f} MB -> {dst}")
EOF
}

# ---- the driver ---------------------------------------------------------------------------------------------
# (in a function, called on the last line with its exit: bash then has read the whole file before running any
# of it, so editing the script while a run is going cannot derail that run)
main() {
  [ "$DRY" = 1 ] || mkdir -p "$OUT/logs"
  cd "$ROOT"
  log "nanomoshi: data $DATA_ROOT, out $OUT, codec $CODEC_STEPS steps, LM $PRE_STEPS + $POST_STEPS steps"
  CODEC_PID=""
  CODEC_START=0
  # the codec's share of the threads while it trains in the background (on 2 cores one thread trains it as fast
  # as two: its small convolutions do not parallelise), the other stages take the rest
  CODEC_THREADS=$(( THREADS > 2 ? THREADS / 2 : 1 ))
  codec_running() { [ -n "$CODEC_PID" ] && kill -0 "$CODEC_PID" 2>/dev/null; }
  reap_codec() { if [ -n "$CODEC_PID" ] && ! codec_running; then finish_codec; fi; }
  finish_codec() {  # wait for the background codec, log its end; a failed codec stops the pipeline
    [ -n "$CODEC_PID" ] || return 0
    local rc=0
    wait "$CODEC_PID" || rc=$?
    CODEC_PID=""
    if [ "$rc" != 0 ]; then  # (its own line in pipeline.log says when it ended)
      tail -n 20 "$OUT/logs/codec.log" >&2
      exit 1
    fi
  }
  background_codec() {  # the codec stage in a subshell, which logs its own end (the driver may be mid-stage then)
    local rc=0
    STAGE_THREADS=$CODEC_THREADS run_codec >> "$OUT/logs/codec.log" 2>&1 || rc=$?
    if [ "$rc" = 0 ] && done_codec; then
      log "stage codec: done in $(( $(date +%s) - CODEC_START )) s"
    else
      log "stage codec: FAILED after $(( $(date +%s) - CODEC_START )) s (see $OUT/logs/codec.log)"
      return 1
    fi
  }
  # a stopped or failed pipeline stops its background codec too (it resumes from its checkpoint next time)
  trap 'if codec_running; then kill -TERM "$CODEC_PID" 2>/dev/null; pkill -TERM -P "$CODEC_PID" 2>/dev/null; fi' EXIT
  for stage in "${STAGES[@]}"; do
    reap_codec
    STAGE_THREADS=$THREADS
    codec_running && STAGE_THREADS=$(( THREADS > CODEC_THREADS ? THREADS - CODEC_THREADS : 1 ))
    if ! wanted "$stage"; then
      log "stage $stage: not selected"; continue
    fi
    if "done_$stage"; then
      log "stage $stage: complete, skipped"; continue
    fi
    if [ "$DRY" = 1 ]; then
      log "stage $stage: would run"; continue
    fi
    if [ "$stage" = codec ]; then
      log "stage codec: start (in the background, $CODEC_THREADS thread(s); its log: $OUT/logs/codec.log)"
      CODEC_START=$(date +%s)
      background_codec &
      CODEC_PID=$!
      continue
    fi
    if [ "$stage" = export ]; then finish_codec; fi  # the shipped codec is the finished one
    log "stage $stage: start"
    start=$(date +%s)
    if ! "run_$stage" >> "$OUT/logs/$stage.log" 2>&1; then
      reap_codec
      log "stage $stage: FAILED after $(( $(date +%s) - start )) s (see $OUT/logs/$stage.log)"
      tail -n 20 "$OUT/logs/$stage.log" >&2
      exit 1
    fi
    "done_$stage" || { log "stage $stage: ran but its output is missing (see $OUT/logs/$stage.log)"; exit 1; }
    log "stage $stage: done in $(( $(date +%s) - start )) s"
  done
  finish_codec  # a codec still training (e.g. --only codec) finishes first
  if [ "$DRY" = 1 ]; then log "nanomoshi: dry run, nothing done"; else log "nanomoshi: the selected stages are done (model folder: $OUT/export)"; fi
}

main "$@"; exit $?
