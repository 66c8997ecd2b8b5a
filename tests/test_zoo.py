"""The finetunes' registry: facts as micro-sam 1.8.14 publishes them, groups for model choosers,
xxh128-verified encoder and decoder files (placed by hand or served from 127.0.0.1 only), and
loading both by name."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch

from napari_sam import weights, zoo
from napari_sam.model import build_decoder, build_sam, random_state_dict
from napari_sam.model.build import MODEL_TYPES
from napari_sam.weights import REGISTRY, WeightsInfo, WeightsUnavailableError, fetch, hash_of
from tests.oracles import micro_sam
from tests.weights_helpers import placed


def test_registry_is_micro_sams(monkeypatch, tmp_path):
    """URLs and xxh128 hashes of every model and decoder equal micro-sam 1.8.14's ``models()``."""
    monkeypatch.setenv("MICROSAM_CACHEDIR", str(tmp_path))
    micro_sam.load()
    from micro_sam.util import models

    theirs = models()
    for name, digest in theirs.registry.items():
        if name.endswith("_decoder"):
            info = REGISTRY[name[: -len("_decoder")]].decoder
        else:
            info = REGISTRY[name]
        assert info.url == theirs.urls[name], name
        if name in ("vit_b", "vit_l", "vit_h"):
            continue  # the official checkpoints keep their sha256 (issue 2)
        assert info.digest == digest, name
    ours = {n for n, i in REGISTRY.items() if i.group != "SAM 2"}
    assert ours == {n for n in theirs.registry if not n.endswith("_decoder")}
    assert {n for n, i in REGISTRY.items() if i.has_decoder} == {
        n[: -len("_decoder")] for n in theirs.registry if n.endswith("_decoder")}
    assert REGISTRY["vit_b_lm"].xxh128 == "fe9252a29f3f4ea53c15a06de471e186"
    assert REGISTRY["vit_b_lm"].decoder.xxh128 == "708b15ac620e235f90bb38612c4929ba"


def test_groups_summaries_and_file_names():
    groups = weights.models_by_group()
    assert list(groups)[:1] == ["SAM 1"]
    assert [i.name for i in groups["Light microscopy"]] == ["vit_l_lm", "vit_b_lm", "vit_t_lm"]
    assert [i.name for i in groups["Medical imaging"]] == ["vit_b_medical_imaging"]
    sam2 = ["sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"]
    assert [i.name for i in groups["SAM 2"]] == sam2
    official = ("vit_b", "vit_l", "vit_h", "vit_t", *sam2)
    assert set(official) <= set(MODEL_TYPES)  # each builds
    names = []
    for info in REGISTRY.values():
        assert info.group in zoo.GROUPS and info.summary, info.name
        assert info.architecture in official, info.name
        names += [info.filename] + ([info.decoder.filename] if info.decoder else [])
    assert len(names) == len(set(names))  # no two files share a cache name
    assert REGISTRY["vit_b_em_organelles"].filename == "vit_b_em_organelles.pt"
    assert not REGISTRY["vit_t"].has_decoder and not REGISTRY["vit_b"].has_decoder


def test_placed_files_are_verified_by_xxh128(tmp_path):
    info = placed("vit_t", b"mobile sam weights")
    assert fetch(info) == weights.cache_dir() / "vit_t.pt"
    assert (weights.cache_dir() / "vit_t.pt.verified").read_text().startswith(f"xxh128:{info.xxh128} ")
    wrong = replace(info, xxh128="0" * 32)
    (weights.cache_dir() / "vit_t.pt.verified").unlink()
    with pytest.raises(WeightsUnavailableError, match="wrong checksum") as err:
        fetch(wrong)
    assert "saved as vit_t.pt" in str(err.value) and "TuDzuwVDHd1ZDnQ" not in str(err.value)


def test_download_model_and_decoder(file_server):
    base, files, hits = file_server
    files["/enc"], files["/dec"] = b"e" * 300_000, b"d" * 200_000
    import xxhash

    decoder = WeightsInfo("m_decoder", base + "/dec", "", 0, xxh128=xxhash.xxh128(files["/dec"]).hexdigest(),
                          file_name="m_decoder.pt")
    info = WeightsInfo("m", base + "/enc", "", 0, xxh128=xxhash.xxh128(files["/enc"]).hexdigest(), file_name="m.pt",
                       decoder=decoder, architecture="vit_b", group="Light microscopy", summary="test")
    seen = []
    path = fetch(info, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == files["/enc"]
    assert (path.parent / "m_decoder.pt").read_bytes() == files["/dec"]
    assert sorted(hits) == ["/dec", "/enc"]
    assert seen[-1] == (200_000, 200_000)  # the size comes from the server (the registry has none)
    fetch(info)
    assert len(hits) == 2  # verified files are not fetched again


def test_a_missing_decoder_only_warns(file_server):
    base, files, hits = file_server
    files["/enc"] = b"encoder"
    import xxhash

    decoder = WeightsInfo("m_decoder", base + "/missing", "", 0, xxh128="1" * 32, file_name="m_decoder.pt")
    info = WeightsInfo("m", base + "/enc", "", 0, xxh128=xxhash.xxh128(b"encoder").hexdigest(), file_name="m.pt",
                       decoder=decoder)
    with pytest.warns(RuntimeWarning, match="automatic instance segmentation with 'm' is not available"):
        path = fetch(info)
    assert path.read_bytes() == b"encoder"
    assert not (path.parent / "m_decoder.pt").exists()  # no partial file


@pytest.fixture()
def vit_t_lm(tmp_path, monkeypatch):
    """vit_t_lm in the registry with random weights placed in the cache (hashes patched to fit)."""
    encoder = tmp_path / "enc.pt"
    torch.save(random_state_dict(build_sam("vit_t"), seed=0), encoder)
    decoder = tmp_path / "dec.pt"
    torch.save(random_state_dict(build_decoder(upsampler="transpose"), seed=1), decoder)
    info = placed("vit_t_lm", encoder.read_bytes())
    dinfo = replace(info.decoder, url=info.url)
    (weights.cache_dir() / dinfo.filename).write_bytes(decoder.read_bytes())
    dinfo = replace(dinfo, xxh128=hash_of(weights.cache_dir() / dinfo.filename, "xxh128"))
    monkeypatch.setitem(REGISTRY, "vit_t_lm", replace(info, decoder=dinfo))
    return REGISTRY["vit_t_lm"]


def test_load_model_and_decoder_by_name(vit_t_lm):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both files present: no warning
        predictor = weights.load_model("vit_t_lm", device="cpu")
    assert predictor.model_name == "vit_t_lm"
    assert type(predictor.model.image_encoder).__name__ == "TinyViT"
    decoder = weights.load_decoder("vit_t_lm")
    assert decoder.model_name == "vit_t_lm" and decoder.upsampler == "transpose"
    assert weights.has_decoder("vit_t_lm") and not weights.has_decoder("vit_t")
    with pytest.raises(ValueError, match="'vit_t' has no instance-segmentation decoder; models with one: vit_l_lm"):
        weights.load_decoder("vit_t")
    with pytest.raises(ValueError, match="neither a registered model name"):
        weights.load_decoder("no_such_model")
