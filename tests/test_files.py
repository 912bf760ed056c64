"""Result files: whole or absent, with the user's permissions, valid JSON."""
import json
import math
import os
import stat

import pytest

from soteria_lib.files import json_safe, write_atomic, write_json, write_together


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_files_get_the_users_umask_not_mkstemps_0600(tmp_path, umask_022):
    write_json(tmp_path / "m.json", {"a": 1})
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, broken)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_files_written_together_appear_all_or_none(tmp_path):
    def fails(tmp):
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_together({tmp_path / "a.png": lambda tmp: open(tmp, "w").write("png"), tmp_path / "b.json": fails})
    assert list(tmp_path.iterdir()) == []
    write_together({tmp_path / "a.png": lambda tmp: open(tmp, "w").write("png"),
                    tmp_path / "b.json": lambda tmp: open(tmp, "w").write("{}")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.json"]


def test_json_has_no_infinity_or_nan(tmp_path):
    data = {"mse": math.inf, "ssim": math.nan, "runs": [1.0, -math.inf], "ok": 0.5}
    assert json_safe(data) == {"mse": None, "ssim": None, "runs": [1.0, None], "ok": 0.5}
    write_json(tmp_path / "m.json", data)
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=lambda c: pytest.fail(c))["ok"] == 0.5
