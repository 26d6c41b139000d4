"""Pseudonyms, key handling and the leak scan, on real Parquet shards."""

import json
import logging
import os
import stat

import numpy as np
import pytest

from mer_core.data.anonymize import (
    KEY_FINGERPRINT_FILE,
    LeakError,
    PseudonymKey,
    PseudonymKeyError,
    anonymize,
    load_key,
    pseudonym,
    raw_identifiers,
    scan_for_leaks,
)
from mer_core.data.ingest import ingest
from mer_core.data.store import CLIPS_DIR, clip_schema, read_clips, rows_to_table, write_table
from tests.conftest import TEST_KEY_HEX


@pytest.fixture(scope="module")
def interim(tiny_synthetic, tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("interim")
    ingest(tiny_config.ingest, out)
    return out / CLIPS_DIR


def _key(hex_text: str = TEST_KEY_HEX) -> PseudonymKey:
    return PseudonymKey(bytes.fromhex(hex_text), "env")


def test_pseudonyms_are_stable_keyed_and_dataset_aware():
    key, other = _key(), _key("ff" * 32)
    assert pseudonym(key, "casme2", "sub01") == pseudonym(key, "casme2", "sub01")
    assert pseudonym(key, "casme2", "sub01") != pseudonym(other, "casme2", "sub01")
    assert pseudonym(key, "casme2", "sub01") != pseudonym(key, "samm", "sub01")
    assert "sub01" not in pseudonym(key, "casme2", "sub01")


def test_processed_data_has_no_raw_identifiers(interim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    raw = read_clips(interim)
    report = anonymize(interim, tmp_path / CLIPS_DIR, _key(), mask_outside_face=True)
    processed = read_clips(tmp_path / CLIPS_DIR)
    assert report.rows == processed.num_rows == raw.num_rows
    assert "source_path" not in processed.column_names
    raw_subjects = set(raw["subject"].to_pylist())
    assert raw_subjects.isdisjoint(processed["subject"].to_pylist())
    assert len(set(processed["subject"].to_pylist())) == len(raw_subjects) == report.subjects
    assert not any("/" in c for c in processed["clip_id"].to_pylist())
    everything = json.dumps(processed.drop_columns(["frames"]).to_pylist()) + json.dumps(report.__dict__)
    for subject in raw_subjects:
        assert subject not in everything
    assert TEST_KEY_HEX not in everything and TEST_KEY_HEX not in caplog.text
    # Background masked: the crop's corners are black, the face is not.
    frames = processed["frames"].combine_chunks().to_numpy_ndarray()
    assert frames[:, :, 0, 0].max() == 0 and frames[:, :, 32, 32].mean() > 40


def test_worker_processes_write_what_one_process_writes(interim, tmp_path):
    one = anonymize(interim, tmp_path / "one" / CLIPS_DIR, _key(), mask_outside_face=True)
    two = anonymize(interim, tmp_path / "two" / CLIPS_DIR, _key(), mask_outside_face=True,
                    workers=2)
    assert len(list(interim.rglob("*.parquet"))) > 1  # more than one shard, so both workers had one
    assert one == two
    assert read_clips(tmp_path / "one" / CLIPS_DIR).equals(read_clips(tmp_path / "two" / CLIPS_DIR))


def test_leak_scan_catches_a_planted_leak(interim, tmp_path):
    table = read_clips(interim).drop_columns(["source_path"]).slice(0, 3)
    rows = table.to_pylist()
    rows[1]["action_units"] = f"4+{rows[0]['subject']}"  # a raw subject id smuggled into a text column
    rows[2]["label"] = "/home/alice/casme2/sub01/EP01"  # a source path
    schema = clip_schema(4, 64, with_source=False)
    path = tmp_path / "leaky.parquet"
    write_table(rows_to_table(rows, schema), path)
    result = scan_for_leaks([path], {rows[0]["subject"]})
    where = {f["where"]: f["count"] for f in result["findings"]}
    assert where == {"column subject": 3, "column clip_id": 3, "column action_units": 1, "column label": 1}


def test_a_leak_stops_the_stage_and_writes_nothing(interim, tmp_path, monkeypatch):
    from mer_core.data import anonymize as module

    monkeypatch.setattr(module, "pseudonym", lambda key, dataset, subject: subject)  # a broken pseudonymiser
    with pytest.raises(LeakError, match="column subject"):
        anonymize(interim, tmp_path / CLIPS_DIR, _key(), mask_outside_face=False)
    assert not (tmp_path / CLIPS_DIR).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_key_file_created_private_outside_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MER_PSEUDONYM_KEY", raising=False)
    key_file = tmp_path / "secrets" / "pseudonym.key"
    repo = tmp_path / "repo"
    repo.mkdir()
    first = load_key("MER_PSEUDONYM_KEY", key_file, repo_root=repo)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert load_key("MER_PSEUDONYM_KEY", key_file, repo_root=repo).secret == first.secret
    with pytest.raises(PseudonymKeyError, match="inside the working tree"):
        load_key("MER_PSEUDONYM_KEY", repo / "k.key", repo_root=repo)
    key_file.write_text("not hex")
    with pytest.raises(PseudonymKeyError, match="not hex"):
        load_key("MER_PSEUDONYM_KEY", key_file, repo_root=repo)
    assert "not hex" not in repr(first) and first.secret.hex() not in repr(first)


def test_a_key_file_in_the_repo_is_refused_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MER_PSEUDONYM_KEY", raising=False)
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(PseudonymKeyError, match="inside the working tree"):
        load_key("MER_PSEUDONYM_KEY", repo / "keys" / "k.key", repo_root=repo)  # absolute, into the repo
    (repo / "keys").mkdir()
    (elsewhere / "link").symlink_to(repo / "keys")
    with pytest.raises(PseudonymKeyError, match="inside the working tree"):
        load_key("MER_PSEUDONYM_KEY", elsewhere / "link" / "k.key", repo_root=repo)  # through a symlink
    assert not list((repo / "keys").iterdir()), "no key was created in the repository"


def test_a_key_file_others_can_read_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("MER_PSEUDONYM_KEY", raising=False)
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(TEST_KEY_HEX + "\n")
    key_file.chmod(0o644)
    with pytest.raises(PseudonymKeyError, match=r"can be read by others \(mode 644\); `chmod 600"):
        load_key("MER_PSEUDONYM_KEY", key_file, repo_root=tmp_path / "repo")
    key_file.chmod(0o600)
    assert load_key("MER_PSEUDONYM_KEY", key_file, repo_root=tmp_path / "repo").secret == bytes.fromhex(TEST_KEY_HEX)


def test_the_leak_scan_ignores_case_and_keeps_to_word_boundaries(tmp_path):
    schema = clip_schema(2, 8, with_source=False)
    rows = [{"clip_id": "c-1", "dataset": "d", "subject": "s-abc", "kind": "micro", "label": "others",
             "action_units": note, "face_box": [0, 0, 8, 8], "frames": np.zeros((2, 8, 8, 3), np.uint8)}
            for note in ("CAROL smiles", "carolina lifts AU12", "Al blinks")]
    path = tmp_path / "part.parquet"
    write_table(rows_to_table(rows, schema), path)
    findings = scan_for_leaks([path], {"Carol", "al"})["findings"]
    # "CAROL" is Carol; "carolina" is not, and the short id "al" does not fire inside "AU12" or "blinks".
    assert findings == [{"file": "part.parquet", "where": "column action_units", "count": 2}]


def test_layout_and_emotion_folders_are_not_identifiers():
    import pyarrow as pa

    table = pa.table({"subject": ["s1", "sub07"], "clip_id": ["smic/s1/micro/negative/s1_ne_01", "mmew/x"],
                      "source_path": ["s1/micro/negative/s1_ne_01", "Micro_Expression/happiness/S07-01-001"]})
    tokens = raw_identifiers(table)
    assert {"s1", "sub07", "s1/micro/negative/s1_ne_01"} <= tokens
    assert not {"micro", "negative", "Micro_Expression", "happiness"} & tokens  # the labels repeat them


def test_env_key_wins(pseudonym_key, tmp_path):
    key = load_key("MER_PSEUDONYM_KEY", tmp_path / "unused.key", repo_root=tmp_path / "repo")
    assert key.source == "env" and key.secret == bytes.fromhex(pseudonym_key)
    assert not (tmp_path / "unused.key").exists()


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_key_fingerprint_is_recorded_never_the_key(interim, tmp_path):
    anonymize(interim, tmp_path / CLIPS_DIR, _key(), mask_outside_face=False)
    record = (tmp_path / CLIPS_DIR / KEY_FINGERPRINT_FILE).read_text()
    assert json.loads(record) == {"key_fingerprint": _key().fingerprint}
    assert TEST_KEY_HEX not in record and TEST_KEY_HEX[:16] not in record


def test_another_key_is_refused_and_the_output_kept(interim, tmp_path):
    out = tmp_path / CLIPS_DIR
    anonymize(interim, out, _key(), mask_outside_face=False)
    before = _snapshot(out)
    other = _key("ff" * 32)
    with pytest.raises(PseudonymKeyError, match=rf"{out}.*{_key().fingerprint}.*{other.fingerprint}.*Restore the original"):
        anonymize(interim, out, other, mask_outside_face=False)
    assert _snapshot(out) == before
    anonymize(interim, out, _key(), mask_outside_face=False)  # the right key carries on


def test_a_lost_key_file_is_noticed_not_silently_replaced(interim, tmp_path, monkeypatch):
    monkeypatch.delenv("MER_PSEUDONYM_KEY", raising=False)
    key_file, repo, out = tmp_path / "keys" / "pseudonym.key", tmp_path / "repo", tmp_path / CLIPS_DIR
    anonymize(interim, out, load_key("MER_PSEUDONYM_KEY", key_file, repo_root=repo), mask_outside_face=False)
    key_file.unlink()  # a new machine, a wiped home folder
    fresh = load_key("MER_PSEUDONYM_KEY", key_file, repo_root=repo)
    assert fresh.created
    with pytest.raises(PseudonymKeyError, match="created just now: the old one is missing"):
        anonymize(interim, out, fresh, mask_outside_face=False)


@pytest.mark.parametrize("plant, message", [
    (lambda path: path.write_bytes(b"\xff\xfe\x00binary"), "binary content"),
    (lambda path: path.mkdir(), "cannot read key file"),
    (lambda path: path.write_text(""), "0 bytes"),
    (lambda path: path.write_text("abcd"), "2 bytes"),
])
def test_an_unreadable_or_malformed_key_file_is_a_clear_error(tmp_path, monkeypatch, plant, message):
    monkeypatch.delenv("MER_PSEUDONYM_KEY", raising=False)
    key_file = tmp_path / "pseudonym.key"
    plant(key_file)
    with pytest.raises(PseudonymKeyError, match=message) as error:
        load_key("MER_PSEUDONYM_KEY", key_file, repo_root=tmp_path / "repo")
    assert str(key_file) in str(error.value)
    assert key_file.exists(), "a bad key file is reported, never replaced"


def test_a_damaged_fingerprint_record_is_a_clear_error(interim, tmp_path):
    out = tmp_path / CLIPS_DIR
    anonymize(interim, out, _key(), mask_outside_face=False)
    (out / KEY_FINGERPRINT_FILE).write_text("{not json")
    with pytest.raises(PseudonymKeyError, match=f"{out / KEY_FINGERPRINT_FILE} is unreadable"):
        anonymize(interim, out, _key(), mask_outside_face=False)


def test_anonymize_failing_mid_write_leaves_the_previous_output(interim, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from mer_core.data import store

    out = tmp_path / CLIPS_DIR
    anonymize(interim, out, _key(), mask_outside_face=False)
    before = _snapshot(out)

    class DiskFullAfterOneRowGroup(pq.ParquetWriter):
        def write_table(self, table, *args, **kwargs):
            super().write_table(table, *args, **kwargs)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.pq, "ParquetWriter", DiskFullAfterOneRowGroup)
    with pytest.raises(OSError, match="No space left"):
        anonymize(interim, out, _key(), mask_outside_face=False)
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.undo()
    anonymize(interim, out, _key(), mask_outside_face=False)
    assert _snapshot(out).keys() == before.keys()
