"""The clip store's atomic writes: what a killed writer leaves is undone by the next one.
"""

from __future__ import annotations

import subprocess
import sys


def test_a_writer_killed_between_its_two_renames_gets_the_previous_version_back(tmp_path):
    from mer_core.data.store import staged_directory

    final = tmp_path / "clips"
    (final / "synth").mkdir(parents=True)
    (final / "synth" / "part-00000.parquet").write_bytes(b"previous version")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # What the swap leaves if killed after moving the old folder aside, before renaming the new one in.
    final.rename(tmp_path / f".clips.{dead.pid}-old.tmp")
    (tmp_path / f".clips.{dead.pid}-k3x9.tmp").mkdir()

    with staged_directory(final) as staged:
        assert (final / "synth" / "part-00000.parquet").read_bytes() == b"previous version"
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clips", staged.name])
        (staged / "new").mkdir()
    assert (final / "new").is_dir() and not (final / "synth").exists()
