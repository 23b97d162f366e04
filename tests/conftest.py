import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

# Tests run on CPU with few threads; the machine has 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def repo_root() -> str:
    return REPO


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "clipbridge tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
                "GIT_COMMITTER_NAME": "clipbridge tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid"}


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory, repo_root):
    """The whole pipeline on the smoke profile, once per session, in a git + DVC copy of the repo
    (shared by tests/test_pipeline.py and tests/test_remote.py). Returns (root, env)."""
    from helpers import dvc, smoke_copy

    root = tmp_path_factory.mktemp("smoke")
    env = {**smoke_copy(root, Path(repo_root)), **GIT_IDENTITY}
    # the project's .gitignore: it ignores data/'s cached directories as wholes, so DVC writes no
    # .gitignore inside them and a fresh clone lacks them entirely (tests/test_remote.py)
    shutil.copy(Path(repo_root) / ".gitignore", root / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=root, env=env, check=True)
    assert dvc(["init", "-q"], root, env).returncode == 0
    run = dvc(["repro"], root, env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root, env
