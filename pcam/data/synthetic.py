"""Synthetic PCam: H&E-like patches that follow PCam's labelling rule.

Label 1 iff tumour-like nuclei (large, irregular, crowded, dark purple) cover
at least one pixel of the central 32x32. Negatives are normal lymph-node
tissue (small round lymphocytes on pink eosin stroma, sometimes white space),
and about 40% of them are hard negatives with tumour nuclei in the border only.
Colours come from Beer-Lambert mixing of haematoxylin and eosin optical
densities, with the stain vectors and amounts jittered per patch.

Patches are made in fixed blocks of `BLOCK` with one random stream per block
(`SeedSequence(seed, spawn_key=(stream, block))`), so patch i is the same
whatever `n` or `start` is asked for, and a large split can be streamed.
"""

import numpy as np

from pcam.core.errors import PCamError
from pcam.core.paths import data_dir as _resolve_data_dir
from pcam.data.changes import plan_changes
from pcam.data.h5read import BOTH_CLASSES
from pcam.data.h5write import write_dataset_info, write_split_files
from pcam.data.meta import synthetic_slides, write_meta
from pcam.data.spec import CENTER_SIZE, LAYOUTS, SPLITS

BLOCK = 256
DEFAULT_SIZES = {"train": 4096, "valid": 1024, "test": 1024}
POSITIVE, NORMAL, HARD_NEGATIVE = 0, 1, 2
HARD_NEGATIVE_SHARE = 0.4  # of the negatives

_SIZE = 96
_PAD = 8  # canvas margin so nucleus stamps never fall off the edge
_CANVAS = _SIZE + 2 * _PAD
_LO, _HI = (_SIZE - CENTER_SIZE) // 2, (_SIZE + CENTER_SIZE) // 2  # 32, 64
_MAX_LYMPH, _MAX_TUMOUR = 120, 40
# Optical density per unit stain (skimage's haematoxylin; eosin tuned pinker).
_H_OD = np.array([0.65, 0.70, 0.29], np.float32)
_E_OD = np.array([0.20, 0.90, 0.40], np.float32)


def _stamp_bank(rng, count, size, radius, irregular):
    """Nucleus stains (`count`, size, size): soft ellipses, optionally ragged and textured."""
    half = size // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    stamps = np.empty((count, size, size), np.float32)
    for i in range(count):  # once at import; not in the generation path
        a, b = rng.uniform(*radius, size=2)
        angle, phase = rng.uniform(0, np.pi, size=2)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        if irregular:  # ragged outline, darker rim, coarse chromatin
            r = r * (1 + 0.18 * np.sin(3 * np.arctan2(v, u) + phase))
            inside = np.clip((1.0 - r) * 3, 0, 1)
            texture = 0.75 + 0.35 * rng.random((size, size)) + 0.3 * (r > 0.7)
            stamps[i] = inside * texture * rng.uniform(0.6, 0.9)
        else:
            stamps[i] = np.clip((1.0 - r) * 2.5, 0, 1) * rng.uniform(1.3, 1.7)
    return stamps


_BANK_RNG = np.random.default_rng(20180612)
_LYMPH = _stamp_bank(_BANK_RNG, 16, 7, (2.0, 3.2), irregular=False)
_TUMOUR = _stamp_bank(_BANK_RNG, 64, 15, (3.5, 6.8), irregular=True)
_GRAIN = _BANK_RNG.normal(0, 0.03, (32, _SIZE, _SIZE)).astype(np.float32)


def _smooth_noise(rng, n, grid):
    """(n, 96, 96) smooth random fields in [0, 1): bilinear upsampling of a coarse grid."""
    coarse = rng.random((n, grid, grid), dtype=np.float32)
    pos = np.linspace(0, grid - 1, _SIZE, dtype=np.float32)
    lo = np.minimum(pos.astype(int), grid - 2)
    w = pos - lo
    up = np.zeros((_SIZE, grid), np.float32)
    up[np.arange(_SIZE), lo] = 1 - w
    up[np.arange(_SIZE), lo + 1] = w
    return up @ coarse @ up.T


def _f32(array):
    return array.astype(np.float32)


def _paint(n, ys, xs, stamp_ids, active, bank):
    """Sum stamps centred at (ys, xs) (n, slots) into (n, 96, 96) stain maps."""
    size = bank.shape[1]
    half = size // 2
    dy, dx = np.mgrid[-half:half + 1, -half:half + 1]
    patch, slot = np.nonzero(active)
    rows = ys[patch, slot][:, None, None] + _PAD + dy
    cols = xs[patch, slot][:, None, None] + _PAD + dx
    flat = (patch[:, None, None] * _CANVAS + rows) * _CANVAS + cols
    weights = bank[stamp_ids[patch, slot]]
    canvas = np.bincount(flat.ravel(), weights.ravel(), minlength=n * _CANVAS * _CANVAS)
    canvas = canvas.reshape(n, _CANVAS, _CANVAS).astype(np.float32)
    return canvas[:, _PAD:-_PAD, _PAD:-_PAD]


def _draw_kinds(rng, n):
    """Per patch: POSITIVE, NORMAL or HARD_NEGATIVE; exactly half positive when n is even."""
    kinds = np.full(n, NORMAL)
    kinds[: n // 2] = POSITIVE
    n_hard = int(round((n - n // 2) * HARD_NEGATIVE_SHARE))
    kinds[n // 2: n // 2 + n_hard] = HARD_NEGATIVE
    return rng.permutation(kinds)


def _tumour_nuclei(rng, kinds):
    """Tumour nucleus centres (n, slots) and which slots are used, per patch kind."""
    n = len(kinds)
    has = kinds != NORMAL
    # Cluster centre: inside the central square for positives; in a border band
    # (at most 18 px deep) for hard negatives.
    centre = rng.uniform(_LO + 2, _HI - 2, size=(n, 2))
    side = rng.integers(0, 4, size=n)
    along = rng.uniform(0, _SIZE, size=n)
    depth = rng.uniform(0, 18, size=n)
    across = np.where(side % 2 == 0, depth, _SIZE - 1 - depth)
    vertical = (side < 2)[:, None]
    border = np.where(vertical, np.stack([across, along], 1), np.stack([along, across], 1))
    hard = kinds == HARD_NEGATIVE
    centre[hard] = border[hard]
    spread = rng.uniform(4, 14, size=(n, 1, 1))
    pos = centre[:, None, :] + rng.normal(0, 1, size=(n, _MAX_TUMOUR, 2)) * spread
    pos = np.clip(np.rint(pos), 0, _SIZE - 1).astype(int)
    pos[:, 0] = np.rint(centre)  # the first nucleus sits on the cluster centre
    count = rng.integers(6, _MAX_TUMOUR + 1, size=(n, 1))
    active = (np.arange(_MAX_TUMOUR) < count) & has[:, None]
    # Hard negatives: drop nuclei whose stamp could reach the central square.
    reach = _TUMOUR.shape[1] // 2 + 1
    near = ((pos >= _LO - reach) & (pos < _HI + reach)).all(axis=2)
    active &= ~(near & hard[:, None])
    return pos[..., 0], pos[..., 1], active, centre


def _make_block(rng, n):
    """One block: images (n, 96, 96, 3) uint8, labels (n,) uint8, truth dict."""
    kinds = _draw_kinds(rng, n)
    # Lymphocytes everywhere, density varying a lot between patches.
    lymph_n = rng.integers(10, _MAX_LYMPH + 1, size=(n, 1))
    lymph_on = np.arange(_MAX_LYMPH) < lymph_n
    lymph_on &= rng.random((n, _MAX_LYMPH)) < np.where(kinds == POSITIVE, 0.6, 1.0)[:, None]
    ly, lx = rng.integers(0, _SIZE, size=(2, n, _MAX_LYMPH))
    lymph = _paint(n, ly, lx, rng.integers(0, len(_LYMPH), (n, _MAX_LYMPH)), lymph_on, _LYMPH)
    ty, tx, tumour_on, centre = _tumour_nuclei(rng, kinds)
    centre = centre.astype(np.float32)  # float32 throughout: half the memory traffic
    tumour = _paint(n, ty, tx, rng.integers(0, len(_TUMOUR), (n, _MAX_TUMOUR)), tumour_on, _TUMOUR)

    # Eosin stroma: coarse fibres plus fine texture; faint purple cytoplasm
    # around tumour clusters; soft-edged white space in about a quarter of patches.
    eosin = 0.15 + 0.35 * _smooth_noise(rng, n, 7) + 0.12 * _smooth_noise(rng, n, 25)
    grid = np.arange(_SIZE, dtype=np.float32)
    d2 = (grid[None, :, None] - centre[:, 0, None, None]) ** 2
    d2 = d2 + (grid[None, None, :] - centre[:, 1, None, None]) ** 2
    cytoplasm = 0.25 * np.exp(-d2 / (2 * 14.0**2)) * (kinds != NORMAL)[:, None, None]
    white = (rng.random(n) < 0.25)[:, None, None]
    level = rng.uniform(0.45, 0.8, size=(n, 1, 1)).astype(np.float32)
    tissue = np.clip((level - _smooth_noise(rng, n, 4)) * 12 + 0.5, 0, 1)
    # Positives keep tissue under their cluster centre, so white space never erases the label.
    keep = np.exp(-d2 / (2 * 12.0**2)) * (kinds == POSITIVE)[:, None, None]
    tissue = np.where(white, np.maximum(tissue, keep), np.float32(1))
    tumour = np.minimum(tumour, 1.4) * tissue  # overlapping nuclei do not turn black

    h_scale = _f32(rng.uniform(0.75, 1.25, (n, 1, 1)))
    h_amount = (lymph * tissue + tumour + cytoplasm * tissue) * h_scale
    e_amount = eosin * tissue * _f32(rng.uniform(0.7, 1.3, (n, 1, 1)))
    h_vec = _H_OD + rng.normal(0, 0.05, (n, 3)).astype(np.float32)
    e_vec = _E_OD + rng.normal(0, 0.06, (n, 3)).astype(np.float32)
    # Grain from a fixed bank: per-pixel random draws would triple the run time.
    grain = _GRAIN[rng.integers(0, len(_GRAIN), n)]
    amounts = np.stack([h_amount, e_amount + grain * tissue], axis=-1).reshape(n, -1, 2)
    od = np.maximum(amounts @ np.stack([h_vec, e_vec], axis=1), 0).reshape(n, _SIZE, _SIZE, 3)
    light = rng.uniform(235, 255, size=(n, 1, 1, 1)).astype(np.float32)
    images = np.clip(light * np.exp(od * np.float32(-np.log(10))), 0, 255).astype(np.uint8)

    # Ground truth from the painted pixels, exactly PCam's rule.
    in_centre = (tumour[:, _LO:_HI, _LO:_HI] > 0.05).any(axis=(1, 2))
    outside = tumour > 0.05
    outside[:, _LO:_HI, _LO:_HI] = False
    labels = in_centre.astype(np.uint8)
    if not np.array_equal(labels, (kinds == POSITIVE).astype(np.uint8)):
        raise AssertionError("synthetic generator broke its own label rule")  # a bug
    truth = {"kind": kinds, "tumour_centre": in_centre, "tumour_border": outside.any(axis=(1, 2))}
    return images, labels, truth


def _block_rng(seed, stream, block):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, block)))


def make_patches(n, seed=0, *, stream=0, start=0, truth=False):
    """Make `n` synthetic patches, deterministic by `(seed, stream)`.

    Args:
        n: number of patches (>= 0).
        seed: non-negative integer seed.
        stream: independent sequence for the same seed (`write_synthetic` uses
            the split's index, so train, valid and test differ).
        start: index of the first patch in the stream (for block-wise writing).
        truth: also return a dict of per-patch ground truth ("kind",
            "tumour_centre", "tumour_border").

    Returns:
        `(images, labels)`: uint8 (n, 96, 96, 3) and uint8 (n,) in {0, 1};
        plus the truth dict when `truth=True`.
    """
    if n < 0 or start < 0 or seed < 0:
        raise ValueError(f"n, start and seed must be >= 0, got n={n}, start={start}, seed={seed}")
    first, last = start // BLOCK, (start + n - 1) // BLOCK
    if n == 0:
        first = last = 0  # one block, sliced to nothing: keeps shapes and truth keys
    parts = [_make_block(_block_rng(seed, stream, b), BLOCK) for b in range(first, last + 1)]
    offset = start - first * BLOCK if n else 0
    cut = slice(offset, offset + n)
    images = np.concatenate([p[0] for p in parts])[cut]
    labels = np.concatenate([p[1] for p in parts])[cut]
    if not truth:
        return images, labels
    keys = parts[0][2].keys()
    return images, labels, {k: np.concatenate([p[2][k] for p in parts])[cut] for k in keys}


def _labels(n, seed, stream):
    # Kinds are the first draw of each block, so labels come without painting.
    blocks = [_draw_kinds(_block_rng(seed, stream, b), BLOCK) for b in range(-(-n // BLOCK))]
    kinds = np.concatenate(blocks)[:n] if blocks else np.zeros(0, int)
    return (kinds == POSITIVE).astype(np.uint8)


def _images(made, tumour):
    images, _, truth = made
    tumour.append(truth["tumour_centre"] | truth["tumour_border"])
    return images


def write_synthetic(data_dir=None, sizes=None, seed=0, *, overwrite=False, layout="gzip"):
    """Write synthetic PCam-layout files, meta CSVs and `dataset.json` into `data_dir`.

    Each split's meta CSV gives every patch one of a few dozen synthetic slide
    ids (`pcam.data.meta.synthetic_slides`), so slide-level resampling runs here too.

    Args:
        data_dir: target folder (default: `$PCAM_DATA_DIR` or `data/`). A folder
            holding the official download is refused.
        sizes: patches per split, default {"train": 4096, "valid": 1024,
            "test": 1024}; a split of size 0 is not written (and an earlier
            one of that name is deleted, since it would not match).
        seed: non-negative integer seed; the same seed gives identical files.
        overwrite: replace and delete split files already in `data_dir`
            (synthetic or imported), printing one line per file; without it
            such a folder is refused. All files are swapped in at once at the
            end: an interruption leaves the old data or the new, never a mix.
        layout: how the image files are stored (`pcam.data.spec.LAYOUTS`):
            "gzip" (chunks of 32 patches, gzip level 4) or "official"
            (contiguous and uncompressed, as the official files are).

    Returns:
        The `dataset.json` content written.

    Raises:
        PCamError: no split has a size above 0; train or valid would hold one
            class only; the folder holds the official download, or other
            files and `overwrite` is False.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}: use {SPLITS}")
    sizes = {split: int(sizes.get(split, 0)) for split in SPLITS}
    if not any(n > 0 for n in sizes.values()):
        raise PCamError("nothing to write: give at least one of --train, --valid, --test "
                        "a size above 0")
    labels = {split: _labels(n, seed, stream)
              for stream, (split, n) in enumerate(sizes.items()) if n > 0}
    for split in BOTH_CLASSES:
        if split in labels and labels[split].min() == labels[split].max():
            raise PCamError(f"--{split} {sizes[split]} with seed {seed} gives patches of one "
                            f"class only; {split} needs both: use --{split} 16 or more")
    folder = _resolve_data_dir(data_dir)
    changes = plan_changes(folder, list(labels), [s for s in SPLITS if s not in labels],
                           overwrite=overwrite, command="synthetic")
    info = {
        "source": "synthetic",
        "synthetic": True,
        "seed": seed,
        "description": "synthetic H&E-like patches (pcam.data.synthetic): label 1 iff tumour-like "
        "nuclei reach the central 32x32; 40% of negatives have tumour nuclei in the border only",
        "splits": {split: sizes[split] for split in labels},
    }
    # All splits, meta CSVs and dataset.json are swapped in together, or none.
    with changes.write(f"synthetic seed={seed} sizes={sizes}") as stage:
        for stream, split in [(i, s) for i, s in enumerate(SPLITS) if s in labels]:
            n, tumour = sizes[split], []  # tumour anywhere in each patch, for the meta file
            blocks = (_images(make_patches(min(BLOCK, n - s), seed, stream=stream, start=s,
                                           truth=True), tumour) for s in range(0, n, BLOCK))
            write_split_files(stage.path, split, blocks, labels[split], write_id=stage.write_id,
                              layout=layout)
            write_meta(stage.path, split, synthetic_slides(split, n, seed, stream),
                       np.concatenate(tumour), labels[split])
        info["write_ids"] = {split: stage.write_id for split in labels}
        write_dataset_info(stage.path, info)
    return info
