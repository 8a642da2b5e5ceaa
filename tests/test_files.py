"""recur.files: a write that fails midway leaves the old file whole and no temporary behind."""

import json
import os

import pytest

from recur import files


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    files.write_json(path, {"bleu": 1.0})
    real_fsync = os.fsync

    def disk_full(fd):  # the new text is half on disk when the device fills up
        os.ftruncate(fd, 5)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        files.write_json(path, {"bleu": 2.0, "more": list(range(100))})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert json.loads(path.read_text()) == {"bleu": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left
    files.write_json(path, {"bleu": 3.0})
    assert json.loads(path.read_text()) == {"bleu": 3.0}
