"""batchvid.interpreter: which executable a child process of batchvid may be started with."""

from __future__ import annotations

import sys

import pytest

from batchvid import interpreter


def test_an_interpreter_is_known_by_its_name() -> None:
    """The names Python interpreters have pass ``is_python``; a host program's do not."""
    names = ["/usr/bin/python3", "/x/.venv/bin/python", "python3.11", "python3.11d", "pypy3", "pythonw.exe"]
    assert all(map(interpreter.is_python, [sys.executable, *names]))
    assert not any(map(interpreter.is_python, ["/usr/bin/uwsgi", "/opt/app/blender", "", "/usr/bin/pythonista-host"]))


def test_a_python_command_runs_this_interpreter_without_the_working_directory() -> None:
    """An interpreter's command is ``sys.executable -P`` and the arguments."""
    assert interpreter.python_command("-c", "pass") == [sys.executable, "-P", "-c", "pass"]


@pytest.mark.parametrize("executable", ["/usr/bin/uwsgi", ""])
def test_a_host_program_gives_no_python_command(monkeypatch: pytest.MonkeyPatch, executable: str) -> None:
    """Where ``sys.executable`` is a host program (or empty) there is no command to start."""
    monkeypatch.setattr(sys, "executable", executable)
    assert interpreter.python_command("-c", "pass") is None


def test_a_frozen_application_gives_no_python_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen application (``sys.frozen``) has no interpreter to start, whatever its name."""
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert interpreter.python_command("-c", "pass") is None
