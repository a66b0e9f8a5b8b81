"""`--compile` on serve, chat and eval dialogue: off by default, a plain switch (the library takes the bool)."""

import argparse
import importlib

import pytest

REQUIRED = {"serve": [], "chat": [], "eval_dialogue": ["--data", "m.jsonl", "--out", "report"]}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_compile_flag_is_off_by_default_and_a_switch(name):
    parser = argparse.ArgumentParser()
    importlib.import_module(f"openmoshi.commands.{name}").add_arguments(parser)
    assert parser.parse_args(REQUIRED[name]).compile is False
    assert parser.parse_args([*REQUIRED[name], "--compile"]).compile is True
    with pytest.raises(SystemExit):
        parser.parse_args([*REQUIRED[name], "--compile", "yes"])
