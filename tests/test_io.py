"""Atomic writes: results and checkpoints get the permissions of any new file (umask), not 0600."""

import os
import stat

import pytest

import analysis.io
from lit_vdit.io import atomic_write_bytes, atomic_write_json, atomic_write_text


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
    atomic_write_text(tmp_path / "metrics.csv", "step\n1\n")
    atomic_write_json(tmp_path / "result.json", {"finished": True})
    analysis.io.atomic_write_text(tmp_path / "report.html", "<p>x</p>")
    assert mode(tmp_path / "metrics.csv") == mode(tmp_path / "result.json") == expected
    assert mode(tmp_path / "report.html") == expected
    with open(tmp_path / "plain.txt", "w") as f:  # what open() gives a new file
        f.write("x")
    assert mode(tmp_path / "plain.txt") == expected


def test_a_failed_write_keeps_the_old_file_and_leaves_no_part_file(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"finished": True})

    class Unwritable:
        def __len__(self):
            return 1

    with pytest.raises(TypeError):
        atomic_write_bytes(target, Unwritable())  # type: ignore[arg-type]
    assert target.read_text() == '{\n  "finished": true\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_part_file_left_by_a_killed_writer_blocks_no_later_write(tmp_path):
    (tmp_path / ".metrics.csv.part").write_text("half")  # boltons' default part name
    (tmp_path / ".metrics.csv.123.abcd1234.part").write_text("half")
    atomic_write_text(tmp_path / "metrics.csv", "step\n1\n")
    analysis.io.atomic_write_text(tmp_path / "metrics.csv", "step\n2\n")
    assert (tmp_path / "metrics.csv").read_text() == "step\n2\n"
