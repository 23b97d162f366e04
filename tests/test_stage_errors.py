"""``stages.run``: the project's expected errors become one line and exit 1; a bug keeps its traceback."""

import sys

import pytest

from clipbridge import errors, stages


def _run(monkeypatch, stage, argv=()):
    monkeypatch.setattr(stages.config, "load", lambda: object())
    monkeypatch.setattr(sys, "argv", ["stage", *argv])
    stages.run(stage)


@pytest.mark.parametrize("exc", [errors.MissingFileError("data/x.pt: dataset split missing"),
                                 errors.UnknownNameError("unknown generator 'x'; available: ['dcgan64']"),
                                 errors.BadValueError("params.yaml: 'train.steps' must be int")])
def test_expected_error_is_one_line_and_exit_1(monkeypatch, capsys, exc):
    def stage(p, *argv):
        raise exc

    with pytest.raises(SystemExit) as info:
        _run(monkeypatch, stage)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err == f"error: {exc.args[0]}\n"          # no quotes around a KeyError's message either


def test_a_bug_keeps_its_traceback(monkeypatch):
    def stage(p, generator):
        return {}[generator]                        # a plain KeyError: a bug, not bad input

    with pytest.raises(KeyError):
        _run(monkeypatch, stage, ["dcgan64"])


def test_project_errors_are_also_the_builtin_errors_callers_expect():
    assert isinstance(errors.UnknownNameError("x"), KeyError) and isinstance(errors.UnknownNameError("x"), ValueError)
    assert isinstance(errors.MissingFileError("x"), FileNotFoundError)
    from clipbridge.config import ConfigError
    from clipbridge.io import ModelFileError
    from clipbridge.cli.photo import PhotoError
    for cls in (ConfigError, ModelFileError, PhotoError):
        assert issubclass(cls, errors.InputError) and issubclass(cls, ValueError)
