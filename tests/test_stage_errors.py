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


def test_a_torchscript_archive_in_the_mirror_is_refused_in_one_line(tmp_path, repo_root):
    """OpenAI's own RN50.pt is a TorchScript archive: the encoder stage names the file and what to put
    there instead, and never loads (runs) it."""
    import dataclasses

    import torch

    from clipbridge import config
    from clipbridge.io import ModelFileError
    from clipbridge.stages.models import check_mirror_encoder

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "RN50-openai.pt")
    p = config.load(f"{repo_root}/params.yaml")
    p = dataclasses.replace(p, profile="pretrained", models=dataclasses.replace(p.models, mirror=str(tmp_path)))
    with pytest.raises(ModelFileError) as info:
        check_mirror_encoder(p)
    msg = info.value.args[0]
    assert "\n" not in msg and "RN50-openai.pt: a TorchScript archive" in msg and "state dict" in msg
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "RN50-openai.pt")   # a state dict passes the check
    check_mirror_encoder(p)
