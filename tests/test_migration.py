"""The one-time migration of the committed results to settings as data (issue 25) is kept and
reversible: every committed results file goes back to the old layout and forward again unchanged."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soteria_lib.sweep.results import COLUMNS

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "tools"))
import migrate_results  # noqa: E402

COMMITTED = migrate_results.committed_files()


def test_the_migration_writes_the_current_layout():
    assert migrate_results.V2_COLUMNS == list(COLUMNS)
    assert any(p.suffix == ".csv" for p in COMMITTED) and any(p.name == "metrics.json" for p in COMMITTED)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_every_committed_results_file_round_trips(tmp_path, path):
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    migrate = migrate_results.migrate_csv if path.suffix == ".csv" else migrate_results.migrate_record
    assert migrate(copy, 1) and copy.read_bytes() != path.read_bytes()
    assert not migrate(copy, 1)  # already in layout 1: left as it is
    assert migrate(copy, 2) and copy.read_bytes() == path.read_bytes()


def test_the_script_migrates_the_files_it_is_given(tmp_path):
    csv = next(p for p in COMMITTED if p.suffix == ".csv")
    copy = tmp_path / csv.name
    shutil.copyfile(csv, copy)
    done = subprocess.run([sys.executable, str(REPOSITORY / "tools" / "migrate_results.py"), "--to", "1", str(copy)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and f"migrated: {copy}" in done.stderr
    assert copy.read_text().startswith(",".join(migrate_results.V1_COLUMNS) + "\n")
