"""The one specification of PatchCamelyon: files, URLs, checksums and sizes.

Source: Zenodo record 2546921 (Veeling et al. 2018). `.gz` MD5s as in
torchvision's PCAM loader, `.h5` MD5s as in kaiko-ai/eva, sizes from
tensorflow-datasets. Nothing else in the package repeats these values.
"""

from dataclasses import dataclass

# How a written image file is stored: "gzip" (chunks of 32 patches, gzip level 4;
# `pcam.data.h5write`) or "official" (contiguous and uncompressed, as the official
# files are once gunzipped: N x 27,648 bytes plus a small header).
LAYOUTS = ("gzip", "official")

SPLITS = ("train", "valid", "test")
PATCH_SHAPE = (96, 96, 3)
CENTER_SIZE = 32  # label 1 iff the central 32x32 holds tumour
URL_TEMPLATE = "https://zenodo.org/records/2546921/files/{name}?download=1"


@dataclass(frozen=True)
class PCamFile:
    """One HDF5 file of the data set and its gzip-compressed download."""

    name: str  # the unpacked .h5 file name
    key: str  # the HDF5 dataset inside: "x" or "y"
    gz_md5: str
    h5_md5: str
    gz_bytes: int | None  # None where the published size is approximate

    @property
    def gz_name(self) -> str:
        return self.name + ".gz"

    @property
    def url(self) -> str:
        return URL_TEMPLATE.format(name=self.gz_name)


# Columns of a split's meta CSV, in file order (pandas may add an unnamed index
# column in front); `wsi` names the whole-slide image (the slide) of each patch.
META_COLUMNS = ("coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi")


@dataclass(frozen=True)
class MetaFile:
    """A split's meta CSV (one row per patch, in the `.h5` files' order).

    Served as plain CSV, not gzipped. No MD5 or size is published for it (the
    loaders above list the HDF5 files only), so it is checked by content: the
    columns are `META_COLUMNS` and the rows number the split's patches
    (`pcam.data.meta.read_slides`).
    """

    name: str

    @property
    def url(self) -> str:
        return URL_TEMPLATE.format(name=self.name)


@dataclass(frozen=True)
class SplitSpec:
    name: str
    length: int
    x: PCamFile
    y: PCamFile

    @property
    def meta(self) -> MetaFile:
        return MetaFile(f"camelyonpatch_level_2_split_{self.name}_meta.csv")


def _file(split: str, key: str, gz_md5: str, h5_md5: str, gz_bytes: int | None) -> PCamFile:
    return PCamFile(f"camelyonpatch_level_2_split_{split}_{key}.h5", key, gz_md5, h5_md5, gz_bytes)


SPEC: dict[str, SplitSpec] = {
    "train": SplitSpec(
        "train",
        262_144,
        _file("train", "x", "1571f514728f59376b705fc836ff4b63",
              "01844da899645b4d6f84946d417ba453", 6_421_353_462),
        _file("train", "y", "35c2d7259d906cfc8143347bb8e05be7",
              "0781386bf6c2fb62d58ff18891466aca", 21_378),
    ),
    "valid": SplitSpec(
        "valid",
        32_768,
        _file("valid", "x", "d5b63470df7cfa627aeec8b9dc0c066e",
              "81cf9680f1724c40673f10dc88e909b1", 805_965_320),
        _file("valid", "y", "2b85f58b927af9964a4c15b8f7e8f179",
              "94d8aacc249253159ce2a2e78a86e658", 3_038),
    ),
    "test": SplitSpec(
        "test",
        32_768,
        _file("test", "x", "d8c2d60d490dbd479f8199bdfa0cf6ec",
              "2614b2e6717d6356be141d9d6dbfcb7e", 800_875_929),
        _file("test", "y", "60a7035772fbdb7f34eb86d4420cf66a",
              "11ed647efe9fe457a4eb45df1dba19ba", None),
    ),
}

# Written by `pcam synthetic` and `pcam import-images` beside the .h5 files;
# absent for the official download. Records copy it to say what data a run saw.
DATASET_INFO = "dataset.json"

# Label-preserving training transforms, in the order they are applied; each is
# implemented in `pcam.data.augment` (all keep the central 32x32 in view).
AUGMENTATIONS = ("dihedral", "shift", "hed", "brightness_contrast")


def check_split_name(split: str) -> str:
    """Return `split` if it is a PCam split name, else raise `PCamError`."""
    from pcam.core.errors import PCamError

    if split not in SPEC:
        raise PCamError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return split
