"""Every command's usage errors (an unknown option, a bad value) are one line and exit 2."""

from __future__ import annotations

import importlib

import pytest

COMMANDS = ["analysis", "app", "bench", "clip", "convert", "data", "demo", "evaluate", "export", "restore", "study", "summary", "train"]


@pytest.mark.parametrize("module", COMMANDS)
def test_an_unknown_option_is_one_line_naming_the_help(module, capsys):
    main = importlib.import_module(f"dfpir.{module}").main
    with pytest.raises(SystemExit) as exit_:
        main(["--no-such-option"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: python -m dfpir.{module}") and err.count("\n") == 1
    assert "--help)" in err


@pytest.mark.parametrize("argv", [["bench", "--size", "x"], ["check", "--layout", "nope"]])
def test_subcommands_use_the_same_one_line_errors(argv, capsys):
    from dfpir import data

    with pytest.raises(SystemExit):
        data.main(argv)
    err = capsys.readouterr().err
    assert err.startswith(f"error: python -m dfpir.data {argv[0]}: argument") and err.count("\n") == 1
