"""Atomic writes: results and checkpoints get the permissions of any new file (umask), not 0600."""

import os
import stat

import pytest

from lit_vdit.io import atomic_write_json, atomic_write_text, current_umask


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    saved = os.umask(0o022)
    yield set_umask
    os.umask(saved)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "metrics.csv", "step\n1\n")
    atomic_write_json(tmp_path / "result.json", {"finished": True})
    assert mode(tmp_path / "metrics.csv") == mode(tmp_path / "result.json") == expected
    with open(tmp_path / "plain.txt", "w") as f:  # what open() gives a new file
        f.write("x")
    assert mode(tmp_path / "plain.txt") == expected
