"""The command-line error boundary: the project's user errors are one line; bugs keep their traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dfpir.errors import USAGE_ERROR, UserError, UserTypeError, cli_main


def failing_main(exc: BaseException):
    @cli_main
    def main(argv: list[str] | None = None) -> int:
        raise exc

    return main


def test_a_user_error_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("DFPIR_DEBUG", raising=False)
    assert failing_main(UserError("--size must be >= 1, got 0"))([]) == USAGE_ERROR
    assert capsys.readouterr().err == "error: --size must be >= 1, got 0\n"


@pytest.mark.parametrize("bug", [ValueError("math domain error"), OSError(5, "Input/output error"), TypeError("bad operand")])
def test_errors_that_are_not_the_users_keep_their_traceback(bug, monkeypatch):
    monkeypatch.delenv("DFPIR_DEBUG", raising=False)
    with pytest.raises(type(bug)):
        failing_main(bug)([])


def test_dfpir_debug_shows_the_traceback_of_a_user_error(monkeypatch):
    monkeypatch.setenv("DFPIR_DEBUG", "1")
    with pytest.raises(UserError, match="no such file"):
        failing_main(UserError("no such file"))([])
    monkeypatch.setenv("DFPIR_DEBUG", "0")  # 0 means off
    assert failing_main(UserError("no such file"))([]) == USAGE_ERROR


def test_user_errors_are_still_the_builtin_errors_library_callers_catch():
    assert issubclass(UserError, ValueError) and issubclass(UserTypeError, TypeError) and issubclass(UserTypeError, UserError)


def test_a_command_process_prints_a_traceback_only_when_asked():
    code = "import sys; from dfpir.summary import main; sys.exit(main(['--size', '0']))"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert plain.returncode == USAGE_ERROR and plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    debug = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "DFPIR_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "UserError" in debug.stderr
