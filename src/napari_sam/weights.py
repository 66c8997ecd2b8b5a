"""Official SAM checkpoints: registry, hash-checked download into a cache, local files.

The cache folder is ``$NAPARI_SAM_CACHE`` if set, else the platform's user cache folder
(``~/.cache/napari-sam`` on Linux). A checkpoint downloaded elsewhere can be placed there
by hand under its official file name; it is verified once, then used directly.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 15.0
RESOLVE_TIMEOUT_S = 5.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class WeightsInfo:
    name: str
    url: str
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


REGISTRY: dict[str, WeightsInfo] = {
    info.name: info
    for info in (
        WeightsInfo("vit_h", BASE_URL + "sam_vit_h_4b8939.pth",
                    "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2_564_550_879),
        WeightsInfo("vit_l", BASE_URL + "sam_vit_l_0b3195.pth",
                    "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1_249_524_607),
        WeightsInfo("vit_b", BASE_URL + "sam_vit_b_01ec64.pth",
                    "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383),
    )
}


SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
REGISTRY.update({  # SAM 2.1 (Meta publishes no checksums: these are the ones pinned by several projects)
    name: WeightsInfo(name, SAM2_BASE_URL + file, sha256, size)
    for name, file, size, sha256 in (
        ("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt", 156_008_466,
         "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
        ("sam2.1_hiera_s", "sam2.1_hiera_small.pt", 184_416_285,
         "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
        ("sam2.1_hiera_b+", "sam2.1_hiera_base_plus.pt", 323_606_802,
         "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
        ("sam2.1_hiera_l", "sam2.1_hiera_large.pt", 898_083_611,
         "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
    )
})


class WeightsUnavailableError(RuntimeError):
    """The checkpoint could not be obtained; the message says how to place it by hand."""


class DownloadCancelled(Exception):
    """Raised from a download whose ``cancel()`` callback returned True."""


def cache_dir() -> Path:
    """Folder that holds downloaded checkpoints (created on demand)."""
    env = os.environ.get("NAPARI_SAM_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-sam"))


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def is_verified(path: Path, sha256: str) -> bool:
    """True if ``path`` has ``sha256``; hashes once, then trusts a stamp file beside it."""
    if not path.is_file():
        return False
    stamp = path.with_name(path.name + ".verified")
    expected = f"{sha256} {_stamp(path)}"
    if stamp.is_file() and stamp.read_text().strip() == expected:
        return True
    if sha256_of(path) != sha256:
        return False
    try:  # best effort: in a read-only folder the file is simply hashed again next time
        stamp.write_text(expected)
    except OSError:
        pass
    return True


class _ProgressAdapter:
    """The tqdm-like object pooch drives, forwarding to ``progress(done, total)``."""

    def __init__(self, progress: Progress | None, cancel: Callable[[], bool] | None, total: int) -> None:
        self.progress, self.cancel, self.total, self.done = progress, cancel, total, 0

    def update(self, n: int) -> None:
        if self.cancel is not None and self.cancel():
            raise DownloadCancelled("download cancelled")
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        if self.progress is not None:
            self.progress(self.done, self.total)

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        pass


def _check_resolvable(url: str) -> None:
    """Fail fast when the host name cannot be resolved in time (DNS has no timeout)."""
    host = urlparse(url).hostname or ""
    result: list[BaseException | None] = []

    def resolve():
        try:
            socket.getaddrinfo(host, None)
            result.append(None)
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(RESOLVE_TIMEOUT_S)
    if not result:
        raise OSError(f"could not resolve {host} within {RESOLVE_TIMEOUT_S:.0f} s")
    if result[0] is not None:
        raise result[0]


def _unavailable(info: WeightsInfo, folder: Path, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Could not download SAM weights {info.name!r} from {info.url}: {reason}. "
        f"If this computer is offline, download {info.filename} on another one and place it "
        f"in {folder} (or set NAPARI_SAM_CACHE to a folder that holds it), or choose the .pth "
        "file directly."
    )


def fetch(
    name: str | os.PathLike | WeightsInfo,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Path:
    """Path of the verified checkpoint ``name`` (``vit_b``, ``vit_l``, ``vit_h``, ``sam2.1_hiera_t``
    ...), downloading it first if needed. ``progress(done_bytes, total_bytes)`` is called during the download;
    ``cancel()`` returning True aborts it (:class:`DownloadCancelled`). Raises
    :class:`WeightsUnavailableError` on any failure; no partial file is left behind.

    A path to an existing file (a ``.pth`` placed anywhere) is accepted instead of a name,
    like everywhere a model name is: it is returned resolved, as is (no hash to check).
    """
    if not isinstance(name, WeightsInfo):
        path = Path(name).expanduser()
        if path.is_file():
            return path.resolve()
    info = name if isinstance(name, WeightsInfo) else REGISTRY.get(str(name))
    if info is None:
        raise ValueError(f"unknown checkpoint {str(name)!r}; known: {', '.join(REGISTRY)} "
                         "(or the path of an existing .pth file)")
    folder = cache_dir()
    target = folder / info.filename
    if is_verified(target, info.sha256):
        return target
    if target.exists():
        raise _unavailable(info, folder, f"the file present at {target} has the wrong checksum; delete it")
    import pooch

    try:
        folder.mkdir(parents=True, exist_ok=True)
        _check_resolvable(info.url)
        downloader = pooch.HTTPDownloader(
            progressbar=_ProgressAdapter(progress, cancel, info.size),
            chunk_size=1 << 20,
            timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
        )
        pooch.retrieve(info.url, known_hash=f"sha256:{info.sha256}", fname=info.filename,
                       path=folder, downloader=downloader)
    except DownloadCancelled:
        raise
    except Exception as exc:  # network errors, HTTP errors, hash mismatch, disk errors
        raise _unavailable(info, folder, str(exc) or type(exc).__name__) from exc
    is_verified(target, info.sha256)  # writes the stamp so later calls return at once
    return target


def load_model(name_or_path: str | os.PathLike, device: str = "auto",
               progress: Progress | None = None, cancel: Callable[[], bool] | None = None):
    """A ready :class:`~napari_sam.engine.Predictor` for a model name or a ``.pth`` path.

    A path's model type is read off its tensor shapes. A name is fetched (see :func:`fetch`).
    """
    from .engine import Predictor
    from .model import CheckpointError, build_sam, guess_model_type, load_checkpoint, read_state_dict

    if str(name_or_path) not in REGISTRY and not Path(name_or_path).expanduser().is_file():
        raise ValueError(
            f"{name_or_path!r} is neither a model name ({', '.join(REGISTRY)}) nor an existing .pth file"
        )
    path = fetch(name_or_path, progress, cancel)  # a path comes back as it is
    state = read_state_dict(path)
    model_type = guess_model_type(state)
    if model_type is None:
        raise CheckpointError(f"{path.name} does not look like a SAM or SAM 2 checkpoint (vit_b, vit_l, vit_h, "
                              "sam2.1_hiera_t/s/b+/l)")
    model = build_sam(model_type)
    load_checkpoint(model, state, name=path.name)
    return Predictor(model.eval(), device=device)
