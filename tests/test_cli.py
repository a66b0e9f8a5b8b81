"""The `openmoshi` dispatcher: help, unknown commands, lazy imports."""

import subprocess
import sys

import pytest

from openmoshi import cli


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in [*cli.COMMANDS, *cli.GROUPS]:
        assert name in out


def test_group_without_subcommand_prints_its_help(capsys):
    for group, (_, subcommands) in cli.GROUPS.items():
        assert cli.main([group]) == 2
        out = capsys.readouterr().out
        assert all(sub in out for sub in subcommands), group


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_command_module_has_the_interface():
    import importlib

    modules = [(name, module_name) for name, (module_name, _) in cli.COMMANDS.items()]
    modules += [(f"{group} {sub}", module_name) for group, (_, subs) in cli.GROUPS.items()
                for sub, (module_name, _) in subs.items()]
    for name, module_name in modules:
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments), name
        assert callable(module.main), name


def test_help_does_not_import_torch():
    code = "import sys; from openmoshi import cli\ntry:\n cli.main(['--help'])\nexcept SystemExit: pass\n" \
           "assert 'torch' not in sys.modules, 'openmoshi --help imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


HELP_RUNNER = """
import sys
from openmoshi import cli
for argv in {argvs!r}:
    try:
        cli.main(argv + ["--help"])
    except SystemExit as exc:
        assert exc.code == 0, argv
    assert "torch" not in sys.modules, f"openmoshi {{' '.join(argv)}} --help imported torch"
print("ok")
"""


def test_every_command_help_is_instant_without_torch():
    """Each command's --help (and each codec action's) in a fresh process: torch is never imported."""
    groups = [[group, sub] for group, (_, subs) in cli.GROUPS.items() for sub in subs]
    argvs = [[name] for name in cli.COMMANDS] + [["codec", "encode"], ["codec", "decode"], ["codec", "demo"]] + groups
    out = subprocess.run([sys.executable, "-c", HELP_RUNNER.format(argvs=argvs)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr
    for argv in [[name] for name in cli.COMMANDS] + groups:
        assert f"usage: openmoshi {' '.join(argv)}" in out.stdout


def test_usage_errors_start_with_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["codec", "decode", "--threads", "-1", "a.npz", "b.wav", "--weights", "w"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --threads: must be >= 1") and "Traceback" not in err


def test_threading_defaults(monkeypatch):
    from openmoshi.commands import common

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        monkeypatch.delenv(name, raising=False)
    common.configure_threading_env()
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["KMP_BLOCKTIME"] == "0"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice wins
    common.configure_threading_env()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    for cores, expected in ((1, 1), (2, 2), (3, 3), (8, 4), (64, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert common.default_threads() == expected
