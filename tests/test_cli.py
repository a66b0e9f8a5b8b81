"""The `openmoshi` dispatcher: help, unknown commands, lazy imports."""

import subprocess
import sys

import pytest

from openmoshi import cli


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_command_module_has_the_interface():
    import importlib

    for name, (module_name, _) in cli.COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments), name
        assert callable(module.main), name


def test_help_does_not_import_torch():
    code = "import sys; from openmoshi import cli\ntry:\n cli.main(['--help'])\nexcept SystemExit: pass\n" \
           "assert 'torch' not in sys.modules, 'openmoshi --help imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
