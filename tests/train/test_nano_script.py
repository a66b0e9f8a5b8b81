"""scripts/train_nanomoshi.sh: argument checks, stage selection (--only / --skip), skipping of complete stages,
--dry-run touching nothing, and the resume-or-restart decision of a training stage (with a stand-in Python that
records its arguments)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_nanomoshi.sh"
STAGES = ["data", "codec", "codes", "snapshot", "tokenizer", "assets", "prepare", "lm-pre", "lm-post", "export"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def data_root(tmp_path: Path, lines: int = 1) -> Path:
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    (root / "manifest.jsonl").write_text("".join(json.dumps({"path": f"c{i}.wav", "duration": 1.0}) + "\n"
                                                 for i in range(lines)))
    return root


def states(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        if " stage " in line:
            name, state = line.split(" stage ", 1)[1].split(": ", 1)
            found[name] = state
    return found


def test_dry_run_plans_every_stage_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run("--data-root", str(tmp_path / "empty"), "--out", str(out), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert states(r.stdout) == {s: "would run" for s in STAGES}  # no data yet: the generator would run
    assert not out.exists()


def test_complete_stages_are_skipped(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "codec" / "export").mkdir(parents=True)
    (out / "codec" / "export" / "mimi.safetensors").write_bytes(b"x")
    (out / "tokenizer.model").write_bytes(b"x")
    r = run("--data-root", str(data_root(tmp_path)), "--out", str(out), "--dry-run")
    s = states(r.stdout)
    assert s["data"] == s["codec"] == s["tokenizer"] == "complete, skipped"
    assert s["snapshot"] == s["lm-pre"] == s["export"] == "would run"


def test_only_and_skip(tmp_path: Path) -> None:
    root = str(data_root(tmp_path))
    s = states(run("--data-root", root, "--out", str(tmp_path / "o"), "--only", "tokenizer", "--only", "prepare",
                   "--dry-run").stdout)
    assert [k for k, v in s.items() if v == "would run"] == ["tokenizer", "prepare"]
    assert s["codec"] == "not selected"
    s = states(run("--data-root", root, "--out", str(tmp_path / "o"), "--skip", "codec", "--dry-run").stdout)
    assert s["codec"] == "not selected" and s["lm-post"] == "would run"


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    root = data_root(tmp_path)
    for args, message in [(["--only", "nope"], "unknown stage 'nope'"), (["--codec-steps", "ten"], "positive"),
                          (["--frobnicate"], "unknown argument"), (["--out"], "needs a value"),
                          (["--vocab-size", "5000"], "<= 1024"),
                          (["--data-root", str(root), "--out", str(root / "x")], "inside the data")]:
        r = run(*args, "--dry-run")
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)


def fake_python(tmp_path: Path) -> Path:
    """Records its arguments, then makes what a finished `train codec` run leaves (the export)."""
    py = tmp_path / "fakepy"
    py.write_text('#!/usr/bin/env bash\necho "$@" >> "$CALLS"\nwhile [ $# -gt 0 ]; do\n'
                  '  if [ "$1" = --out ]; then mkdir -p "$2/export"; echo w > "$2/export/mimi.safetensors"; fi\n'
                  '  shift\ndone\n')
    py.chmod(0o755)
    return py


def test_a_training_stage_resumes_from_a_checkpoint_or_restarts(tmp_path: Path) -> None:
    root, out, calls = data_root(tmp_path), tmp_path / "out", tmp_path / "calls.txt"
    env = {"OPENMOSHI_PYTHON": str(fake_python(tmp_path)), "CALLS": str(calls)}
    (out / "codec").mkdir(parents=True)
    (out / "codec" / "metrics.jsonl").write_text("{}\n")  # killed before its first checkpoint
    r = run("--data-root", str(root), "--out", str(out), "--only", "codec", "--codec-steps", "7", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    call = calls.read_text().split()
    assert call[:5] == ["-m", "openmoshi.cli", "train", "codec", "nano"] and "--resume" not in call
    assert call[call.index("--steps") + 1] == "7" and "teacher=whisper-tiny.en" in call
    assert not (out / "codec" / "metrics.jsonl").exists()  # the partial run was started over
    assert "stage codec: done in" in (out / "pipeline.log").read_text()
    # a partial run with a checkpoint resumes
    (out / "codec" / "export" / "mimi.safetensors").unlink()
    (out / "codec" / "checkpoints" / "step_00000005").mkdir(parents=True)
    calls.unlink()
    assert run("--data-root", str(root), "--out", str(out), "--only", "codec", env=env).returncode == 0
    call = calls.read_text().split()
    assert "--resume" in call and "nano" not in call and call[call.index("--out") + 1] == str(out / "codec")
    # complete: nothing runs
    calls.unlink()
    r = run("--data-root", str(root), "--out", str(out), "--only", "codec", env=env)
    assert "complete, skipped" in r.stdout and not calls.exists()


def test_a_failing_stage_stops_the_pipeline(tmp_path: Path) -> None:
    py = tmp_path / "failpy"
    py.write_text("#!/usr/bin/env bash\necho boom >&2\nexit 3\n")
    py.chmod(0o755)
    out = tmp_path / "out"
    r = run("--data-root", str(data_root(tmp_path)), "--out", str(out), env={"OPENMOSHI_PYTHON": str(py)})
    assert r.returncode == 1 and "boom" in r.stderr
    log = (out / "pipeline.log").read_text()
    assert "stage codec: FAILED" in log and "stage snapshot" not in log


def test_snapshot_freezes_the_finished_valid_conversations(tmp_path: Path) -> None:
    import sys

    import numpy as np
    import soundfile as sf

    root = data_root(tmp_path, lines=4)
    words = {0: [["Hi.", [0.1, 0.3], "SPEAKER_MAIN"]], 2: [],
             3: [["Right.", [0.1, 0.5], "SPEAKER_MAIN"], ["Yes.", [0.4, 0.6], "SPEAKER_MAIN"]]}  # 3: overlapping
    for i, alignments in words.items():  # conversation 1 is unfinished: no wav, no sidecar
        sf.write(root / f"c{i}.wav", np.zeros((24_000, 2), np.float32), 24_000)
        (root / f"c{i}.json").write_text(json.dumps({"alignments": alignments}))
    out = tmp_path / "out"
    r = run("--data-root", str(root), "--out", str(out), "--only", "snapshot", "--min-hours", "0.0001",
            env={"OPENMOSHI_PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout + r.stderr
    frozen = [json.loads(x) for x in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert [e["path"] for e in frozen] == [str(root / "c0.wav"), str(root / "c2.wav")]
    log = (out / "logs" / "snapshot.log").read_text()
    assert "left out" in log and "c3.json" in log and "overlaps" in log  # what `data check` rejects
    again = run("--data-root", str(root), "--out", str(out), "--only", "snapshot")
    assert "stage snapshot: complete, skipped" in again.stdout  # frozen: later conversations do not change it


def test_prepare_runs_one_rank_per_thread_then_writes_the_index(tmp_path: Path) -> None:
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    py = tmp_path / "prepy"  # records its arguments; the call without --rank writes the index
    py.write_text('#!/usr/bin/env bash\necho "$@" >> "$CALLS"\ncase "$*" in *--rank*) exit 0 ;; esac\n'
                  f'mkdir -p "{out}/data/train.prepared"; echo {{}} > "{out}/data/train.prepared/index.json"\n')
    py.chmod(0o755)
    env = {"OPENMOSHI_PYTHON": str(py), "CALLS": str(calls)}
    r = run("--data-root", str(data_root(tmp_path)), "--out", str(out), "--only", "prepare", "--threads", "3",
            env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = calls.read_text().splitlines()
    ranks = sorted(line.split("--rank ")[1].split()[0] for line in lines if "--rank" in line)
    assert ranks == ["0", "1", "2"] and all("--world-size 3" in line for line in lines if "--rank" in line)
    assert "--rank" not in lines[-1] and "--threads 3" in lines[-1]
    # a failing rank fails the stage, and the index call does not run
    (out / "data" / "train.prepared" / "index.json").unlink()
    py.write_text('#!/usr/bin/env bash\necho "$@" >> "$CALLS"\ncase "$*" in *"--rank 1"*) exit 4 ;; esac\n')
    calls.unlink()
    r = run("--data-root", str(data_root(tmp_path)), "--out", str(out), "--only", "prepare", "--threads", "2",
            env=env)
    assert r.returncode == 1 and "stage prepare: FAILED" in (out / "pipeline.log").read_text()
    assert all("--rank" in line for line in calls.read_text().splitlines())


def test_the_codec_trains_in_the_background_and_codes_come_from_its_frozen_encoder(tmp_path: Path) -> None:
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    py = tmp_path / "codecpy"  # a codec run: the frozen encoder's export first, the final export 5 s later
    py.write_text('#!/usr/bin/env bash\necho "$@" >> "$CALLS"\n'
                  f'mkdir -p "{out}/codec/export-frozen"; echo w > "{out}/codec/export-frozen/mimi.safetensors"\n'
                  f'sleep 5; mkdir -p "{out}/codec/export"; echo w > "{out}/codec/export/mimi.safetensors"\n')
    py.chmod(0o755)
    env = {"OPENMOSHI_PYTHON": str(py), "CALLS": str(calls)}
    r = run("--data-root", str(data_root(tmp_path)), "--out", str(out), "--only", "codec", "--only", "codes",
            "--threads", "2", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / "pipeline.log").read_text()
    assert log.index("stage codes: done") < log.index("stage codec: done")  # codes did not wait for the decoder
    assert "in the background, 1 thread" in log and "--threads 1" in calls.read_text()
    assert str(out / "codec" / "export-frozen") in (out / "logs" / "codes.log").read_text()
    # codes alone, with no codec training and none finished, is a clear failure rather than a wait
    r = run("--data-root", str(data_root(tmp_path)), "--out", str(tmp_path / "o2"), "--only", "codes", env=env)
    assert r.returncode == 1 and "the codec stage is not running" in r.stderr


def test_editing_the_script_while_it_runs_does_not_derail_the_run(tmp_path: Path) -> None:
    import shutil
    import time

    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "train_nanomoshi.sh"
    shutil.copyfile(SCRIPT, script)
    out = tmp_path / "out"
    py = tmp_path / "codecpy"
    py.write_text(f'#!/usr/bin/env bash\nmkdir -p "{out}/codec/export-frozen" "{out}/codec/export"\n'
                  f'echo w > "{out}/codec/export-frozen/mimi.safetensors"; sleep 3\n'
                  f'echo w > "{out}/codec/export/mimi.safetensors"\n')
    py.chmod(0o755)
    proc = subprocess.Popen(["bash", str(script), "--data-root", str(data_root(tmp_path)), "--out", str(out),
                             "--only", "codec", "--only", "codes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OPENMOSHI_PYTHON": str(py)})
    time.sleep(1.5)  # mid-run: shift every byte of the file (a new header) and change its end
    text = script.read_text()
    script.write_text("#!/usr/bin/env bash\n" + "# an edit made while a run is going\n" * 40 + text[20:]
                      + "echo 'this line was not there when the run started'\n")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout + stderr
    assert "the selected stages are done" in stdout and "was not there" not in stdout
