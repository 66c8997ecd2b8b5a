"""Model weights: registry, hash-checked download into a cache, local files.

The registry holds the official SAM checkpoints and the finetunes of :mod:`napari_sam.zoo`
(micro-sam's microscopy, histopathology and medical models, MobileSAM) and SAM 2.1, each with its group and
a one-line summary for model choosers; most finetunes come with a second file, the decoder for
automatic instance segmentation (:func:`load_decoder`), which :func:`fetch` downloads too.

The cache folder is ``$NAPARI_SAM_CACHE`` if set, else the platform's user cache folder
(``~/.cache/napari-sam`` on Linux). A checkpoint downloaded elsewhere can be placed there
by hand under its registry file name; it is verified once, then used directly.

The proof of that check is a stamp ``NAME.verified`` beside the file: its hash bound to the
file's identity (size, mtime, ctime, inode, device) and sealed with an HMAC keyed by a random
per-user key (``.stamp-key-USER`` in the cache folder, readable by its owner only). A file that
was replaced or touched in any way (even with its old mtime restored: the ctime changes), a
stamp copied from elsewhere, edited or written without the key, all fail, and the file is
hashed again (0.6 s for vit_b's 375 MB on a 2-core CPU, docs/performance.md). Where the key
cannot be kept (a read-only folder) the file is hashed on every use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from .engine.predictor import Cancelled
from .zoo import SAM1_SUMMARIES, SAM2_BASE_URL, SAM2_CHECKPOINTS

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 15.0
RESOLVE_TIMEOUT_S = 5.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class WeightsInfo:
    """One downloadable file. ``size`` 0: unknown (the download reports the server's).
    ``xxh128``: the hash when the publisher gives xxh128 instead of sha256; ``file_name``: the
    cached name when the URL does not end in one; ``decoder``: the instance-segmentation decoder
    file of a model that has one; ``architecture``: the model type to build (default: read off
    the checkpoint); ``group`` and ``summary``: what a model chooser shows."""

    name: str
    url: str
    sha256: str
    size: int
    xxh128: str = ""
    file_name: str = ""
    decoder: WeightsInfo | None = None
    architecture: str = ""
    group: str = "SAM 1"
    summary: str = ""

    @property
    def filename(self) -> str:
        return self.file_name or self.url.rsplit("/", 1)[-1]

    @property
    def digest(self) -> str:
        """The expected hash as pooch writes it (``xxh128:...``); a bare hex string is sha256."""
        return f"xxh128:{self.xxh128}" if self.xxh128 else self.sha256

    @property
    def has_decoder(self) -> bool:
        return self.decoder is not None


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


def _zoo_entries() -> dict[str, WeightsInfo]:
    from . import zoo

    out = {}
    for m in zoo.MODELS:
        decoder = None
        if m.decoder_url:
            decoder = WeightsInfo(f"{m.name}_decoder", m.decoder_url, "", 0, xxh128=m.decoder_xxh128,
                                  file_name=f"{m.name}_decoder.pt", group=m.group)
        out[m.name] = WeightsInfo(m.name, m.url, "", 0, xxh128=m.xxh128, file_name=f"{m.name}.pt", decoder=decoder,
                                  architecture=m.architecture, group=m.group, summary=m.summary)
    return out


REGISTRY.update(_zoo_entries())
for _name, _summary in SAM1_SUMMARIES.items():
    REGISTRY[_name] = replace(REGISTRY[_name], architecture=_name, summary=_summary)
REGISTRY.update({c.name: WeightsInfo(c.name, SAM2_BASE_URL + c.file, c.sha256, c.size, architecture=c.name,
                                     group="SAM 2", summary=c.summary) for c in SAM2_CHECKPOINTS})


def models_by_group() -> dict[str, list[WeightsInfo]]:
    """Registered models per group, groups in chooser order (:data:`napari_sam.zoo.GROUPS`,
    then any other), models in registry order."""
    from .zoo import GROUPS

    groups: dict[str, list[WeightsInfo]] = {g: [] for g in GROUPS}
    for info in REGISTRY.values():
        groups.setdefault(info.group, []).append(info)
    return {g: infos for g, infos in groups.items() if infos}


class WeightsUnavailableError(RuntimeError):
    """The checkpoint could not be obtained; the message says how to place it by hand."""


class DownloadCancelled(Cancelled):
    """Raised from a download whose ``cancel()`` callback returned True (a
    :class:`napari_sam.engine.Cancelled`, like every cancelled job)."""


def cache_dir() -> Path:
    """Folder that holds downloaded checkpoints (created on demand)."""
    env = os.environ.get("NAPARI_SAM_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-sam"))


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    return hash_of(path, "sha256", chunk)


def hash_of(path: Path, algorithm: str = "sha256", chunk: int = 1 << 22) -> str:
    """Hex digest of the file at ``path``: ``sha256`` or ``xxh128`` (the ``xxhash`` package)."""
    if algorithm == "xxh128":
        import xxhash

        digest = xxhash.xxh128()
    else:
        digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp_key(folder: Path) -> bytes | None:
    """This user's random stamp key in ``folder`` (made on first use, owner-only); None if it
    cannot be read or made (then nothing is trusted without hashing)."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    path = folder / f".stamp-key-{user}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError:
        return None
    else:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    try:
        key = path.read_bytes()
    except OSError:
        return None
    return key if len(key) == 32 else None


def _stamp(path: Path, sha256: str, key: bytes) -> str:
    """The stamp text of ``path`` as it is now (see the module docstring)."""
    st = path.stat()
    identity = f"{sha256} {st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"
    return f"{identity} {hmac.new(key, identity.encode(), hashlib.sha256).hexdigest()}"


def is_verified(path: Path, sha256: str) -> bool:
    """True if ``path`` has the hash ``sha256`` (a sha256 hex digest, or ``"xxh128:<hex>"``);
    hashes once, then trusts the stamp beside it as long as it fits the file exactly and carries
    this user's seal (module docstring); else hashes again."""
    if not path.is_file():
        return False
    stamp = path.with_name(path.name + ".verified")
    key = _stamp_key(path.parent)
    try:
        if key is not None and stamp.is_file() and hmac.compare_digest(stamp.read_text().strip(),
                                                                       _stamp(path, sha256, key)):
            return True
    except (OSError, UnicodeDecodeError):
        pass
    algorithm, _, hexdigest = sha256.rpartition(":")
    if hash_of(path, algorithm or "sha256") != hexdigest:
        return False
    try:  # best effort: in a read-only folder the file is simply hashed again next time
        if key is not None:
            stamp.write_text(_stamp(path, sha256, key))
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
        "file directly." + (f" (The download from {info.url} is to be saved as {info.filename}.)"
                            if info.file_name else "")
    )


def fetch(
    name: str | os.PathLike | WeightsInfo,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Path:
    """Path of the verified checkpoint ``name`` (a :data:`REGISTRY` name), downloading it first
    if needed. ``progress(done_bytes, total_bytes)`` is called during the download; ``cancel()``
    returning True aborts it (:class:`DownloadCancelled`). Raises :class:`WeightsUnavailableError`
    on any failure; no partial file is left behind. A model with an instance-segmentation decoder
    gets its decoder file too; if only that one fails, a warning says so (the model still works
    interactively) and :func:`load_decoder` raises later.

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
    target = fetch_file(info, progress, cancel)
    if info.decoder is not None:
        try:
            fetch_file(info.decoder, progress, cancel)
        except WeightsUnavailableError as exc:
            warnings.warn(f"{exc} Without it, automatic instance segmentation with {info.name!r} is not "
                          "available; interactive segmentation works.", RuntimeWarning, stacklevel=2)
    return target


def fetch_file(info: WeightsInfo, progress: Progress | None = None, cancel: Callable[[], bool] | None = None) -> Path:
    """Path of the verified file ``info`` in the cache, downloaded first if needed (see :func:`fetch`)."""
    folder = cache_dir()
    target = folder / info.filename
    if is_verified(target, info.digest):
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
        known = info.digest if ":" in info.digest else f"sha256:{info.digest}"
        pooch.retrieve(info.url, known_hash=known, fname=info.filename, path=folder, downloader=downloader)
    except DownloadCancelled:
        raise
    except Exception as exc:  # network errors, HTTP errors, hash mismatch, disk errors
        raise _unavailable(info, folder, str(exc) or type(exc).__name__) from exc
    is_verified(target, info.digest)  # writes the stamp so later calls return at once
    return target


def check_model_name(name_or_path: str | os.PathLike) -> None:
    """``ValueError`` unless ``name_or_path`` is a model name of :data:`REGISTRY` or an existing
    file (cheap: for commands to check before any work)."""
    if str(name_or_path) not in REGISTRY and not Path(name_or_path).expanduser().is_file():
        raise ValueError(
            f"{name_or_path!r} is neither a registered model name ({', '.join(REGISTRY)}) nor an existing checkpoint file"
        )


def load_model(name_or_path: str | os.PathLike, device: str = "auto",
               progress: Progress | None = None, cancel: Callable[[], bool] | None = None):
    """A ready :class:`~napari_sam.engine.Predictor` for a model name or a checkpoint path.

    A path's model type is read off its tensor shapes (official checkpoints, micro-sam exports
    and training checkpoints are accepted, see :mod:`napari_sam.model.formats`). A name is
    fetched (see :func:`fetch`); the predictor's ``model_name`` is then the registry name
    (``"vit_b_lm"``), so embeddings of different finetunes are never mixed up.
    """
    from .engine import Predictor
    from .model import CheckpointError, build_sam, guess_model_type, load_checkpoint, read_state_dict

    check_model_name(name_or_path)
    path = fetch(name_or_path, progress, cancel)  # a path comes back as it is
    state = read_state_dict(path)
    info = REGISTRY.get(str(name_or_path))
    model_type = (info.architecture if info is not None else "") or guess_model_type(state)
    if model_type is None:
        raise CheckpointError(f"{path.name} does not look like a SAM or SAM 2 checkpoint (vit_b, vit_l, vit_h, "
                              "vit_t, sam2.1_hiera_t/s/b+/l)")
    model = build_sam(model_type)
    load_checkpoint(model, state, name=path.name)
    if info is not None:
        model.model_type = info.name
    return Predictor(model.eval(), device=device)


def has_decoder(name_or_path: str | os.PathLike) -> bool:
    """Whether a registered model (or a checkpoint file) has an instance-segmentation decoder.
    A file is read to find out."""
    info = REGISTRY.get(str(name_or_path))
    if info is not None:
        return info.has_decoder
    from .model.formats import decoder_state, read_checkpoint

    path = Path(name_or_path).expanduser()
    return path.is_file() and decoder_state(read_checkpoint(path), path.name) is not None


def load_decoder(name_or_path: str | os.PathLike, progress: Progress | None = None,
                 cancel: Callable[[], bool] | None = None):
    """The instance-segmentation decoder (:class:`napari_sam.model.unetr.InstanceDecoder`, CPU,
    eval mode) of a registered model, fetched if needed, or of a file: a ``*_decoder.pt``, a
    micro-sam export or a training checkpoint with a ``decoder_state``. Its ``model_name`` is
    the registry name (None for a file), which selects the post-processing defaults."""
    from .model.formats import CheckpointError, decoder_state, read_checkpoint
    from .model.unetr import build_decoder

    info = REGISTRY.get(str(name_or_path))
    if info is not None:
        if info.decoder is None:
            with_decoder = ", ".join(n for n, i in REGISTRY.items() if i.has_decoder)
            raise ValueError(f"model {info.name!r} has no instance-segmentation decoder; models with one: {with_decoder}")
        path = fetch_file(info.decoder, progress, cancel)
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ValueError(f"{name_or_path!r} is neither a registered model name ({', '.join(REGISTRY)}) nor an existing file")
    state = decoder_state(read_checkpoint(path), path.name)
    if state is None:
        raise CheckpointError(f"{path.name} holds no instance-segmentation decoder (expected a micro-sam "
                              "*_decoder.pt, an export with a decoder_state, or a joint training checkpoint)")
    decoder = build_decoder(state, name=path.name)
    decoder.model_name = info.name if info is not None else None
    return decoder
