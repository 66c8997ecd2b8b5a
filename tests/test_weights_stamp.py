"""The ``.verified`` stamp: a forged, copied or stale stamp never skips the hash check."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from napari_sam import weights
from napari_sam.weights import WeightsInfo, WeightsUnavailableError, fetch
from tests.recording import record_calls

PAYLOAD = b"official weights " * 1000
OTHER = b"tampered weights " * 1000  # same size
SHA = hashlib.sha256(PAYLOAD).hexdigest()
INFO = WeightsInfo("test", "http://127.0.0.1:9/sam_test.pth", SHA, len(PAYLOAD))  # never contacted


@pytest.fixture()
def placed() -> Path:
    folder = weights.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sam_test.pth"
    path.write_bytes(PAYLOAD)
    assert fetch(INFO) == path  # hashed once, stamped
    return path


def replace_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    time.sleep(0.05)  # past the file system's clock granularity
    path.write_bytes(OTHER)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture()
def hashes(monkeypatch):
    return record_calls(monkeypatch, weights, "hash_of")


def test_a_valid_stamp_skips_hashing(placed, hashes):
    assert fetch(INFO) == placed and hashes == []


def test_a_stamp_forged_from_the_files_size_and_mtime_is_not_trusted(placed, hashes):
    replace_keeping_size_and_mtime(placed)
    st = placed.stat()
    stamp = placed.with_name(placed.name + ".verified")
    for forged in (f"{SHA} {st.st_size}:{st.st_mtime_ns}",  # what used to be enough
                   f"{SHA} {st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev} {'0' * 64}"):
        stamp.write_text(forged)
        with pytest.raises(WeightsUnavailableError, match="wrong checksum"):
            fetch(INFO)
    assert len(hashes) == 2 and placed.read_bytes() == OTHER  # hashed each time; the file left alone


def test_a_valid_stamp_kept_beside_a_replaced_file_is_not_trusted(placed, hashes):
    stamp = placed.with_name(placed.name + ".verified")
    valid = stamp.read_text()
    replace_keeping_size_and_mtime(placed)  # size, mtime and inode unchanged; ctime moves
    stamp.write_text(valid)
    with pytest.raises(WeightsUnavailableError, match="wrong checksum"):
        fetch(INFO)
    assert hashes == [(placed, "sha256")]


def test_load_model_with_a_forged_stamp_refuses_the_file(monkeypatch):
    info = weights.REGISTRY["vit_b"]
    folder = weights.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / info.filename
    path.write_bytes(OTHER)
    st = path.stat()
    path.with_name(path.name + ".verified").write_text(f"{info.sha256} {st.st_size}:{st.st_mtime_ns}")
    with pytest.raises(WeightsUnavailableError, match="wrong checksum"):
        weights.load_model("vit_b", device="cpu")


def test_the_stamp_key_is_private_to_its_user(placed):
    (key,) = placed.parent.glob(".stamp-key-*")
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32


def test_without_a_key_the_file_is_hashed_every_time(placed, hashes, monkeypatch):
    monkeypatch.setattr(weights, "_stamp_key", lambda folder: None)  # e.g. a read-only shared folder
    assert fetch(INFO) == placed and fetch(INFO) == placed and len(hashes) == 2
