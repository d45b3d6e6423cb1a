"""Augmentation: shapes, dihedral group, centre-keeping shifts, HED jitter, seeding."""

import numpy as np
import pytest
import tensorflow as tf
from augment_reference import reference_augment
from skimage.color import rgb2hed

from pcam.data import augment
from pcam.run.config import AUGMENTATIONS


def _batch(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def _pixel_codes(img):
    """Each RGB pixel as one integer, sorted: the image's multiset of pixels."""
    img = img.astype(np.int64)
    return np.sort((img[..., 0] << 16 | img[..., 1] << 8 | img[..., 2]).ravel())


@pytest.mark.parametrize("names", [[n] for n in AUGMENTATIONS] + [list(AUGMENTATIONS)])
def test_output_keeps_dtype_and_shape(names):
    x = _batch()
    out = augment.build_augmenter(names, seed=0)(tf.constant(x))
    assert out.dtype == tf.uint8 and tuple(out.shape) == x.shape
    assert not np.array_equal(out.numpy(), x)


def test_dihedral_permutes_pixels_and_reaches_all_eight():
    x = np.repeat(_batch(1), 64, axis=0)  # one asymmetric image, 64 draws
    out = augment.build_augmenter(["dihedral"], seed=1)(tf.constant(x)).numpy()
    codes = _pixel_codes(x[0])
    assert all(np.array_equal(_pixel_codes(o), codes) for o in out)
    variants = [v.numpy()[0] for v in augment.dihedral_variants(x[:1])]
    assert len({o.tobytes() for o in out}) == 8
    assert {o.tobytes() for o in out} == {v.tobytes() for v in variants}


def test_dihedral_variants_identity_first_and_equal_on_symmetric_input():
    x = _batch(2)
    variants = [v.numpy() for v in augment.dihedral_variants(x)]
    assert len(variants) == 8 and np.array_equal(variants[0], x)
    assert np.array_equal(variants[1], np.rot90(x, 1, axes=(1, 2)))
    assert len({v.tobytes() for v in variants}) == 8
    # the maximum over the group orbit is invariant under the group
    sym = np.max(variants, axis=0)
    assert all(np.array_equal(v.numpy(), sym) for v in augment.dihedral_variants(sym))


def test_shift_keeps_the_central_32x32_in_view():
    x = np.zeros((64, 96, 96, 3), np.uint8)
    x[:, 32:64, 32:64, 0] = 255  # the labelled centre
    out = augment.build_augmenter(["shift"], seed=2)(tf.constant(x)).numpy()
    offsets = set()
    for o in out:
        rows, cols = np.nonzero(o[..., 0])
        # the whole centre is still there, once, as a block moved by <= MAX_SHIFT
        assert rows.size == 32 * 32
        dy, dx = rows.min() - 32, cols.min() - 32
        assert rows.max() - rows.min() == 31 and cols.max() - cols.min() == 31
        assert max(abs(dy), abs(dx)) <= augment.MAX_SHIFT
        offsets.add((dy, dx))
    assert len(offsets) > 20  # the shifts vary


def test_shift_pads_by_reflection():
    x = np.full((16, 96, 96, 3), 7, np.uint8)
    x[:, :, 0] = 9  # left column
    out = augment.build_augmenter(["shift"], seed=0)(tf.constant(x)).numpy()
    assert set(np.unique(out)) <= {7, 9}  # no zero padding


def test_hed_conversion_matches_skimage_and_zero_jitter_is_identity():
    x = _batch(4)
    ours = augment._rgb_to_hed(tf.constant(x / 255.0, tf.float32)).numpy()
    np.testing.assert_allclose(np.maximum(ours, 0), rgb2hed(x), atol=1e-5)
    seed = tf.constant([1, 2], tf.int64)
    xf = tf.constant(x, tf.float32)
    same = augment._hed(xf, tf.ones([4, 3]), tf.zeros([4, 3])).numpy()
    assert np.abs(same - x).max() <= 1
    scale = tf.random.stateless_uniform([4, 3], seed, 0.7, 1.3)
    offset = tf.random.stateless_uniform([4, 3], seed + 1, -0.05, 0.05)
    jittered = augment._hed(xf, scale, offset).numpy()
    assert np.abs(jittered - x).mean() > 2


def test_same_seed_same_output():
    x = tf.constant(_batch(16))
    names = list(AUGMENTATIONS)
    first = augment.build_augmenter(names, 5)(x).numpy()
    assert np.array_equal(first, augment.build_augmenter(names, 5)(x).numpy())
    assert not np.array_equal(first, augment.build_augmenter(names, 6)(x).numpy())
    fn = augment.build_augmenter(names, 0)
    s = tf.constant([3, 4], tf.int64)
    assert np.array_equal(fn(x, seed=s).numpy(), fn(x, seed=s).numpy())


def test_make_dataset_augmentation_is_reproducible_and_varies_per_epoch(tmp_path):
    from h5_files import write_pcam

    from pcam.data.pipeline import make_dataset

    write_pcam(tmp_path, "valid", n=64)

    def epochs(seed):
        ds = make_dataset("valid", data_dir=tmp_path, batch_size=4, augment=list(AUGMENTATIONS),
                          seed=seed, cache=False)
        return [np.concatenate([b[0] for b in ds.as_numpy_iterator()]) for _ in range(2)]

    first, again = epochs(5), epochs(5)  # parallel map: a shared RNG would differ here
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])  # new draws each epoch
    assert not np.array_equal(first[0], epochs(6)[0])


def test_names_checked_and_empty_means_none():
    assert augment.build_augmenter([], seed=0) is None
    with pytest.raises(ValueError, match="'rotate'"):
        augment.build_augmenter(["dihedral", "rotate"], seed=0)


def test_augmentation_examples_for_the_figure():
    patch = _batch(1)[0]
    examples = augment.augmentation_examples(patch, seed=0)
    assert list(examples) == ["original", *AUGMENTATIONS]
    assert np.array_equal(examples["original"], patch)
    for name, img in examples.items():
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8, name


def _tissue(n=32):
    """Real-looking H&E patches (the synthetic generator), not uniform noise."""
    from pcam.data.synthetic import make_patches

    return make_patches(n, seed=3)[0]


ALL_AND_EACH = [[n] for n in AUGMENTATIONS] + [list(AUGMENTATIONS)]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("names", ALL_AND_EACH)
def test_fused_augmentation_matches_the_step_by_step_reference(names, jit):
    """Same draws, same patches: geometry exactly, colour to within one grey level."""
    if jit and not augment.xla_available():
        pytest.skip("XLA does not run here")
    x = tf.constant(_tissue())
    fused = augment.build_augmenter(names, seed=0, jit=jit)
    for s in range(4):
        seed = tf.constant([s, 7], tf.int64)
        ours = fused(x, seed=seed).numpy().astype(int)
        ref = reference_augment(x, seed, names).numpy().astype(int)
        diff = np.abs(ours - ref)
        if set(names) <= {"dihedral", "shift"}:
            assert diff.max() == 0
        else:
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_fused_augmentation_has_the_reference_distribution():
    """Channel means, spreads and grey-level histograms over many draws agree."""
    x = tf.constant(_tissue(64))
    names = list(AUGMENTATIONS)
    fused = augment.build_augmenter(names, seed=0)
    ours, ref = [], []
    for s in range(16):
        seed = tf.constant([s, 11], tf.int64)
        ours.append(fused(x, seed=seed).numpy())
        ref.append(reference_augment(x, seed, names).numpy())
    ours, ref = np.concatenate(ours).astype(float), np.concatenate(ref).astype(float)
    np.testing.assert_allclose(ours.mean(axis=(0, 1, 2)), ref.mean(axis=(0, 1, 2)), atol=0.05)
    np.testing.assert_allclose(ours.std(axis=(0, 1, 2)), ref.std(axis=(0, 1, 2)), atol=0.05)
    for c in range(3):
        h_ours = np.bincount(ours[..., c].astype(int).ravel(), minlength=256) / ours[..., c].size
        h_ref = np.bincount(ref[..., c].astype(int).ravel(), minlength=256) / ref[..., c].size
        assert np.abs(h_ours - h_ref).sum() < 2e-3  # total variation distance


def test_jit_setting_checked():
    with pytest.raises(ValueError, match="jit"):
        augment.build_augmenter(["hed"], jit="yes")


@pytest.mark.parametrize("bad", [
    np.zeros((2, 96, 96, 3), np.float32),  # floats in [0, 1] would come out black
    np.zeros((2, 96, 64, 3), np.uint8),    # not square: no dihedral group
    np.zeros((2, 96, 96, 1), np.uint8),    # not RGB: no stain jitter
    np.zeros((96, 96, 3), np.uint8),       # one patch, not a batch
])
def test_input_that_is_not_a_uint8_batch_of_square_rgb_patches_is_refused(bad):
    with pytest.raises(ValueError, match=r"uint8 batch of square RGB patches \[B, S, S, 3\]"):
        augment.build_augmenter(list(AUGMENTATIONS), seed=0)(tf.constant(bad))
    with pytest.raises(ValueError, match="uint8 patch"):
        augment.augmentation_examples(np.zeros((96, 96, 3), np.float32))
