"""Published finetunes, MobileSAM and SAM 2.1: the facts :mod:`napari_sam.weights` registers for them.

Sources and hashes as micro-sam 1.8.14 publishes them (``micro_sam/util.py``, ``models()``):
light- and electron-microscopy models on BioImage.IO's public S3, the others and MobileSAM on
the GWDG owncloud. Hashes are xxh128. Every model but ``vit_t`` has a separate decoder file
for automatic instance segmentation. Files are cached as ``<name>.pt`` / ``<name>_decoder.pt``
(their URLs do not name them uniquely).
"""

from __future__ import annotations

from dataclasses import dataclass

BIOIMAGEIO = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/"
OWNCLOUD = "https://owncloud.gwdg.de/index.php/s/"

# Model groups in the order a chooser lists them, with what each group is for.
GROUPS = {
    "SAM 1": "Segment Anything as released by Meta AI: general images, interactive prompts.",
    "SAM 2": "Segment Anything 2: images and video (propagation through time or z).",
    "Light microscopy": "micro-sam's finetunes for cells and nuclei in fluorescence and label-free light microscopy.",
    "Electron microscopy": "micro-sam's finetunes for mitochondria and nuclei (organelles) in electron microscopy.",
    "Histopathology": "PathoSAM finetunes for nuclei in H&E and other stained tissue sections.",
    "Medical imaging": "MedicoSAM finetune for organs and lesions in CT, MRI, ultrasound and other medical images.",
}


@dataclass(frozen=True)
class ZooModel:
    name: str
    architecture: str  # model type to build
    group: str  # a key of GROUPS
    summary: str  # one line: what it is for
    url: str
    xxh128: str
    decoder_url: str = ""  # "" for models without an instance-segmentation decoder
    decoder_xxh128: str = ""


def _bioimageio(name: str, resource: str, group: str, summary: str, encoder: str, decoder: str) -> ZooModel:
    base = f"{BIOIMAGEIO}{resource}/files/{name[:5]}"
    return ZooModel(name, name[:5], group, summary, base + ".pt", encoder, base + "_decoder.pt", decoder)


def _owncloud(name: str, group: str, summary: str, encoder: tuple[str, str], decoder: tuple[str, str]) -> ZooModel:
    return ZooModel(name, name[:5], group, summary, OWNCLOUD + encoder[0] + "/download", encoder[1],
                    OWNCLOUD + decoder[0] + "/download", decoder[1])


LM, EM, HISTO, MEDICAL = "Light microscopy", "Electron microscopy", "Histopathology", "Medical imaging"
MODELS: tuple[ZooModel, ...] = (
    ZooModel("vit_t", "vit_t", "SAM 1", "MobileSAM: SAM distilled into a 5.7M-parameter TinyViT encoder, "
             "the fastest on a CPU.", OWNCLOUD + "TuDzuwVDHd1ZDnQ/download", "8eadbc88aeb9d8c7e0b4b60c3db48bd0"),
    _bioimageio("vit_l_lm", "idealistic-rat/1.2", LM, "Cells and nuclei in light microscopy, ViT-L (most accurate, slow).",
                "017f20677997d628426dec80a8018f9d", "2faeafa03819dfe03e7c46a44aaac64a"),
    _bioimageio("vit_b_lm", "diplomatic-bug/1.2", LM, "Cells and nuclei in light microscopy, ViT-B (the default).",
                "fe9252a29f3f4ea53c15a06de471e186", "708b15ac620e235f90bb38612c4929ba"),
    _bioimageio("vit_t_lm", "faithful-chicken/1.1", LM, "Cells and nuclei in light microscopy, TinyViT (fast on a CPU).",
                "72ec5074774761a6e5c05a08942f981e", "3e914a5f397b0312cdd36813031f8823"),
    _bioimageio("vit_l_em_organelles", "humorous-crab/1.2", EM, "Mitochondria and nuclei in EM, ViT-L.",
                "810b084b6e51acdbf760a993d8619f2d", "334877640bfdaaabce533e3252a17294"),
    _bioimageio("vit_b_em_organelles", "noisy-ox/1.2", EM, "Mitochondria and nuclei in EM, ViT-B.",
                "f3bf2ed83d691456bae2c3f9a05fb438", "bb6398956a6b0132c26b631c14f95ce2"),
    _bioimageio("vit_t_em_organelles", "greedy-whale/1", EM, "Mitochondria and nuclei in EM, TinyViT (fast on a CPU).",
                "253474720c497cce605e57c9b1d18fd9", "8f897c7bb93174a4d1638827c4dd6f44"),
    _owncloud("vit_b_histopathology", HISTO, "Nuclei in histopathology, ViT-B.",
              ("sBB4H8CTmIoBZsQ", "ffd1a2cd84570458b257bd95fdd8f974"), ("KO9AWqynI7SFOBj", "6a66194dcb6e36199cbee2214ecf7213")),
    _owncloud("vit_l_histopathology", HISTO, "Nuclei in histopathology, ViT-L.",
              ("IZgnn1cpBq2PHod", "b591833c89754271023e901281dee3f2"), ("oIs6VSmkOp7XrKF", "46aab7765d4400e039772d5a50b55c04")),
    _owncloud("vit_h_histopathology", HISTO, "Nuclei in histopathology, ViT-H (largest).",
              ("L7AcvVz7DoWJ2RZ", "bd1856dafc156a43fb3aa705f1a6e92e"), ("1qAKxy5H0jgwZvM", "3ed9f87e46ad5e16935bd8d722c8dc47")),
    _owncloud("vit_b_medical_imaging", MEDICAL, "Organs and lesions in 2D medical images (CT, MRI, ultrasound...), ViT-B.",
              ("f5Ol4FrjPQWfjUF", "40169f1e3c03a4b67bff58249c176d92"), ("ahd3ZhZl2e0RIwz", "9e498b12f526f119b96c88be76e3b2ed")),
)

# One line for the original checkpoints (their facts live in weights.REGISTRY).
SAM1_SUMMARIES = {
    "vit_h": "Original SAM, ViT-H (largest, 2.6 GB).",
    "vit_l": "Original SAM, ViT-L.",
    "vit_b": "Original SAM, ViT-B (smallest of the three).",
}

# SAM 2.1 (Meta's 2024-09-28 release). Meta publishes no checksums: these sha256 values are the
# ones pinned by several independent projects.
SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


@dataclass(frozen=True)
class Sam2Checkpoint:
    name: str  # registry name and model type
    file: str  # under SAM2_BASE_URL
    size: int  # bytes
    sha256: str
    summary: str


SAM2_CHECKPOINTS: tuple[Sam2Checkpoint, ...] = (
    Sam2Checkpoint("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt", 156_008_466,
                   "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", "SAM 2.1, Hiera tiny (fastest)."),
    Sam2Checkpoint("sam2.1_hiera_s", "sam2.1_hiera_small.pt", 184_416_285,
                   "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", "SAM 2.1, Hiera small."),
    Sam2Checkpoint("sam2.1_hiera_b+", "sam2.1_hiera_base_plus.pt", 323_606_802,
                   "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", "SAM 2.1, Hiera base+."),
    Sam2Checkpoint("sam2.1_hiera_l", "sam2.1_hiera_large.pt", 898_083_611,
                   "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", "SAM 2.1, Hiera large (best)."),
)
