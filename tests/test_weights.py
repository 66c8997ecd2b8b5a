"""Checkpoint registry and downloads, exercised against servers on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from napari_sam import weights
from napari_sam.weights import REGISTRY, DownloadCancelled, WeightsInfo, WeightsUnavailableError, fetch

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture()
def server():
    """An HTTP server on 127.0.0.1 serving PAYLOAD at /sam_test.pth (404 elsewhere)."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            if self.path != "/sam_test.pth":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            for i in range(0, len(PAYLOAD), 65536):
                self.wfile.write(PAYLOAD[i : i + 65536])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/sam_test.pth"


def files_in(folder: Path) -> list[str]:
    """Files in ``folder`` but this user's stamp key (see ``test_weights_stamp.py``)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".stamp-key-")) if folder.exists() else []


def test_registry_has_official_checkpoints():
    assert REGISTRY["vit_b"].url == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    assert REGISTRY["vit_b"].sha256 == "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"
    assert REGISTRY["vit_b"].size == 375_042_383
    assert REGISTRY["vit_h"].filename == "sam_vit_h_4b8939.pth"
    assert REGISTRY["vit_h"].sha256.startswith("a7bf3b02")
    assert REGISTRY["vit_l"].filename == "sam_vit_l_0b3195.pth"


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SAM_CACHE", str(tmp_path / "c"))
    assert weights.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NAPARI_SAM_CACHE")
    assert "napari-sam" in str(weights.cache_dir())


def test_download_verifies_reports_progress_and_caches(server):
    base, hits = server
    info = WeightsInfo("test", base + "/sam_test.pth", SHA, len(PAYLOAD))
    seen = []
    path = fetch(info, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == PAYLOAD
    assert path.parent == weights.cache_dir()
    assert seen and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    assert len(hits) == 1
    # Present and verified: returns at once, without the network.
    t0 = time.perf_counter()
    assert fetch(info) == path
    assert len(hits) == 1 and time.perf_counter() - t0 < 1.0


def test_hash_mismatch_leaves_nothing(server):
    base, _ = server
    info = WeightsInfo("test", base + "/sam_test.pth", "0" * 64, len(PAYLOAD))
    with pytest.raises(WeightsUnavailableError) as err:
        fetch(info)
    assert files_in(weights.cache_dir()) == []
    assert info.url in str(err.value) and "sam_test.pth" in str(err.value)


def test_http_error_is_clear(server):
    base, _ = server
    info = WeightsInfo("test", base + "/missing.pth", SHA, 1)
    with pytest.raises(WeightsUnavailableError, match="404"):
        fetch(info)
    assert files_in(weights.cache_dir()) == []


def test_offline_fails_fast_with_instructions():
    info = WeightsInfo("test", closed_port_url(), SHA, len(PAYLOAD))
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        fetch(info)
    assert time.perf_counter() - t0 < 30
    msg = str(err.value)
    assert info.url in msg and "sam_test.pth" in msg and str(weights.cache_dir()) in msg
    assert files_in(weights.cache_dir()) == []


def test_stalled_server_times_out(monkeypatch):
    """A server that accepts the connection but never answers must not hang us."""
    monkeypatch.setattr(weights, "READ_TIMEOUT_S", 1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        info = WeightsInfo("test", f"http://127.0.0.1:{listener.getsockname()[1]}/sam_test.pth", SHA, 1)
        t0 = time.perf_counter()
        with pytest.raises(WeightsUnavailableError):
            fetch(info)
        assert time.perf_counter() - t0 < 10
    finally:
        listener.close()
    assert files_in(weights.cache_dir()) == []


def test_cancel_leaves_no_partial_file(server):
    base, _ = server
    info = WeightsInfo("test", base + "/sam_test.pth", SHA, len(PAYLOAD))
    calls = []
    with pytest.raises(DownloadCancelled):
        fetch(info, progress=lambda d, t: calls.append(d), cancel=lambda: len(calls) >= 1)
    assert files_in(weights.cache_dir()) == []


def test_file_placed_by_hand_is_used_offline():
    info = WeightsInfo("test", closed_port_url(), SHA, len(PAYLOAD))
    folder = weights.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sam_test.pth").write_bytes(PAYLOAD)
    assert fetch(info) == folder / "sam_test.pth"


def test_wrong_file_placed_by_hand_is_reported_not_overwritten():
    info = WeightsInfo("test", closed_port_url(), SHA, len(PAYLOAD))
    folder = weights.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sam_test.pth").write_bytes(b"truncated")
    with pytest.raises(WeightsUnavailableError, match="wrong checksum"):
        fetch(info)
    assert (folder / "sam_test.pth").read_bytes() == b"truncated"


def test_unknown_name():
    with pytest.raises(ValueError, match="vit_b"):
        fetch("vit_q")


def test_load_model_from_path(tiny_checkpoint, rgb_image):
    predictor = weights.load_model(tiny_checkpoint, device="cpu")
    assert predictor.model_name == "vit_tiny_test"
    predictor.set_image(rgb_image)
    assert predictor.predict(points=[[10, 10]]).masks.shape == (3, 300, 400)


def test_load_model_refuses_nonsense(tmp_path):
    with pytest.raises(ValueError, match="neither a registered model name"):
        weights.load_model(tmp_path / "nothing.pth")


def test_fetch_accepts_the_path_of_an_existing_pth(tmp_path, monkeypatch):
    (tmp_path / "my model.pth").write_bytes(b"anything: not hashed, not copied")
    monkeypatch.chdir(tmp_path)
    assert fetch("my model.pth") == tmp_path.resolve() / "my model.pth"  # relative, resolved
    assert fetch(tmp_path / "my model.pth") == tmp_path.resolve() / "my model.pth"  # PathLike
    assert files_in(weights.cache_dir()) == []  # nothing downloaded or stamped
    with pytest.raises(ValueError, match="existing .pth"):  # a missing path is not a name either
        fetch(tmp_path / "missing.pth")


def _read_only(folder: Path):
    """Make ``folder`` read-only; False where that has no effect (root ignores modes)."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return True
    probe.unlink()
    folder.chmod(0o755)
    return False


def test_file_placed_by_hand_in_a_read_only_folder():
    info = WeightsInfo("test", closed_port_url(), SHA, len(PAYLOAD))
    folder = weights.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sam_test.pth").write_bytes(PAYLOAD)
    if not _read_only(folder):
        pytest.skip("folder permissions are not enforced for this user (root)")
    try:
        assert fetch(info) == folder / "sam_test.pth"  # no PermissionError from the stamp
        assert fetch(info) == folder / "sam_test.pth"  # hashed again, still fine
        assert files_in(folder) == ["sam_test.pth"]  # no stamp could be written
    finally:
        folder.chmod(0o755)
    assert fetch(info) == folder / "sam_test.pth"  # writable again: the stamp is written now
    assert files_in(folder) == ["sam_test.pth", "sam_test.pth.verified"]


def test_stamp_write_failure_is_not_fatal(monkeypatch):
    """The same as above where chmod cannot stop the writer (root): the stamp write fails."""
    info = WeightsInfo("test", closed_port_url(), SHA, len(PAYLOAD))
    folder = weights.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sam_test.pth").write_bytes(PAYLOAD)
    real = Path.write_text

    def refuse(self, *args, **kwargs):
        if self.name.endswith(".verified"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse)
    assert fetch(info) == folder / "sam_test.pth"
    assert files_in(folder) == ["sam_test.pth"]


def test_registry_has_sam2_checkpoints():
    base = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
    expected = {  # the table
        "sam2.1_hiera_t": ("sam2.1_hiera_tiny.pt", 156_008_466,
                           "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
        "sam2.1_hiera_s": ("sam2.1_hiera_small.pt", 184_416_285,
                           "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
        "sam2.1_hiera_b+": ("sam2.1_hiera_base_plus.pt", 323_606_802,
                            "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
        "sam2.1_hiera_l": ("sam2.1_hiera_large.pt", 898_083_611,
                           "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
    }
    for name, (file, size, sha) in expected.items():
        info = REGISTRY[name]
        assert (info.url, info.filename, info.size, info.sha256) == (base + file, file, size, sha)
        assert (info.group, info.architecture, info.xxh128, info.decoder) == ("SAM 2", name, "", None) and info.summary


def test_load_sam2_model(tmp_path, sam2_state, rgb_image, monkeypatch):
    path = tmp_path / "sam2_tiny.pt"
    torch.save({"model": sam2_state}, path)  # Meta's file layout
    predictor = weights.load_model(path, device="cpu")
    assert predictor.model_name == "sam2_tiny_test"
    predictor.set_image(rgb_image)
    assert predictor.predict(points=[[10, 10]]).masks.shape == (3, 300, 400)
    monkeypatch.setattr(weights, "_check_resolvable", lambda url: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(WeightsUnavailableError, match="sam2.1_hiera_tiny.pt") as err:
        weights.load_model("sam2.1_hiera_t", device="cpu")
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt" in str(err.value)
