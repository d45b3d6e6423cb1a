"""Slide-aware statistics: meta files, cluster bootstrap, paired tests, what the README says."""

import csv

import numpy as np
import pytest
from fake_runs import make_run
from h5_files import write_pcam

from pcam.core.errors import PCamError
from pcam.core.paths import PROJ_ROOT
from pcam.data.check import check_data_dir, format_check_table
from pcam.data.h5read import open_split, read_labels, read_slides
from pcam.data.meta import synthetic_slides, write_meta
from pcam.data.spec import META_COLUMNS, SPEC, SPLITS
from pcam.evaluation.compare import paired_comparison
from pcam.evaluation.metrics import THRESHOLD_RULE, choose_threshold, evaluate_predictions
from pcam.evaluation.predictions import Predictions, load_predictions, save_predictions
from pcam.evaluation.stats import bootstrap_weights, paired_accuracy_difference
from pcam.report.protocol import comparison_text, protocol_text
from pcam.report.table import CI_ROW, results_table
from pcam.run.records import read_record

SIZES = {"train": 512, "valid": 256, "test": 256}  # the synthetic_data_dir fixture
SCHEMA1 = PROJ_ROOT / "tests" / "data" / "schema1-runs"


def _width(scores, key):
    low, high = scores["ci"][key]
    return high - low


def _correlated(n_slides=40, per_slide=50, seed=0):
    """Labels, probabilities and slides where how right the model is depends on the slide."""
    rng = np.random.default_rng(seed)
    slides = np.repeat([f"s{k:02d}" for k in range(n_slides)], per_slide)
    y = rng.integers(0, 2, slides.size)
    skill = np.repeat(rng.normal(1.0, 1.5, n_slides), per_slide)  # easy, hard, misleading slides
    logit = (2 * y - 1) * skill + rng.normal(0, 0.5, slides.size)
    return y, 1 / (1 + np.exp(-logit)), slides


# --- meta files --------------------------------------------------------------------------


def test_synthetic_meta_files_give_each_patch_a_slide(synthetic_data_dir):
    seen = set()
    for split in SPLITS:
        with open(synthetic_data_dir / SPEC[split].meta.name, newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["", *META_COLUMNS]  # PCam's layout: pandas' index column first
        assert len(rows) - 1 == SIZES[split]
        opened = open_split(synthetic_data_dir, split)
        labels = read_labels(opened)
        centre = np.array([r[4] == "True" for r in rows[1:]])
        tumour = np.array([r[3] == "True" for r in rows[1:]])
        np.testing.assert_array_equal(centre, labels.astype(bool))
        assert tumour[centre].all() and tumour[~centre].any()  # hard negatives: border tumour
        slides = read_slides(opened)
        assert slides.shape == (SIZES[split],) and [r[5] for r in rows[1:]] == slides.tolist()
        assert len(set(slides.tolist())) == SIZES[split] // 16
        places = {(r[5], r[1], r[2]) for r in rows[1:]}
        assert len(places) == SIZES[split]  # no two patches at one place of a slide
        assert not seen & set(slides.tolist())  # each split has slides of its own
        seen |= set(slides.tolist())
    # The default sizes give a few dozen slides per split.
    assert len(set(synthetic_slides("train", 4096, 0, 0).tolist())) == 48
    assert len(set(synthetic_slides("valid", 160, 0, 1).tolist())) == 10


def test_meta_file_absent_malformed_or_good(tmp_path):
    write_pcam(tmp_path, "valid", 20)
    (tmp_path / "dataset.json").write_text('{"source": "synthetic", "synthetic": true}')
    split = open_split(tmp_path, "valid")
    assert read_slides(split) is None
    path = tmp_path / SPEC["valid"].meta.name
    bad = {
        "coord_y,coord_x,tumor,wsi\n" + "1,2,False,a\n" * 20: r"has the columns coord_y, "
        r"coord_x, tumor, wsi, expected coord_y, coord_x, tumor_patch, center_tumor_patch, wsi",
        ",".join(META_COLUMNS) + "\n" + "1,2,False,False,a\n" * 19:
            r"has 19 rows but its split has 20 patches",
        ",".join(META_COLUMNS) + "\n" + "1,2,False,False,a\n" * 3 + "1,2,False,False,\n" * 17:
            r"line 5: expected 5 fields ending with the slide id",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(PCamError, match=message) as error:
            read_slides(split)
        assert str(path) in str(error.value)
        [row] = check_data_dir(tmp_path)
        assert not row["ok"] and row["slides"] is None and str(path) in row["error"]
    # Without the index column, as the columns are documented, is fine too.
    path.write_text(",".join(META_COLUMNS) + "\n" + "".join(
        f"{i},0,False,False,slide{i % 3}\n" for i in range(20)))
    assert read_slides(split).tolist() == [f"slide{i % 3}" for i in range(20)]
    [row] = check_data_dir(tmp_path)
    assert row["ok"] and row["slides"] == 3
    assert format_check_table([row]).splitlines()[1].split()[:4] == ["valid", "20", "7", "3"]
    path.unlink()
    assert format_check_table(check_data_dir(tmp_path)).splitlines()[1].split()[3] == "none"


def test_writing_a_split_drops_its_stale_meta_file(tmp_path):
    from pcam.data.h5write import write_split

    write_pcam(tmp_path, "test", 8)
    write_meta(tmp_path, "test", ["a"] * 8, [False] * 8, [False] * 8)
    write_split(tmp_path, "test", np.zeros((4, 96, 96, 3), np.uint8), [0, 1, 0, 1])
    assert not (tmp_path / SPEC["test"].meta.name).exists()  # 8 old slides, 4 new patches


# --- the cluster bootstrap -----------------------------------------------------------------


def test_bootstrap_weights_draw_whole_slides():
    groups = np.repeat(["b", "a", "c", "d"], [3, 5, 1, 7])
    weights = np.concatenate(list(bootstrap_weights(groups.size, 50, seed=3, groups=groups)))
    assert weights.shape == (50, 16)
    for name in "abcd":
        block = weights[:, groups == name]
        assert (block == block[:, :1]).all()  # every patch of a slide has its slide's count
    counts = np.stack([weights[:, groups == g][:, 0] for g in "abcd"], axis=1)
    assert (counts.sum(axis=1) == 4).all()  # 4 slides drawn per replicate
    again = np.concatenate(list(bootstrap_weights(groups.size, 50, seed=3, groups=groups)))
    np.testing.assert_array_equal(weights, again)


def test_intervals_over_slides_are_wider_when_slides_are_correlated():
    y, p, slides = _correlated()
    over_patches = evaluate_predictions(y, p, 0.5, n_boot=400)
    over_slides = evaluate_predictions(y, p, 0.5, n_boot=400, slides=slides)
    assert over_patches["bootstrap_unit"] == "patches" and "n_slides" not in over_patches
    assert over_slides["bootstrap_unit"] == "slides" and over_slides["n_slides"] == 40
    assert over_slides["bootstrap_seed"] == 0 and over_slides["n_boot"] == 400
    # The point estimates do not depend on the unit, only the intervals do.
    assert over_slides["roc_auc"] == over_patches["roc_auc"]
    for key in ("at_chosen.accuracy", "roc_auc", "nll", "ece"):
        assert _width(over_slides, key) > 2 * _width(over_patches, key), key
    # Too few slides to resample: patches, and a note that says so.
    few = evaluate_predictions(y, p, 0.5, n_boot=400, slides=np.where(y == 1, "a", "b"))
    assert few["bootstrap_unit"] == "patches" and few["ci"] == over_patches["ci"]
    assert "only 2 slides, too few to resample" in few["notes"][0]
    # Slide ids that carry no correlation (shuffled) give about the patch width.
    shuffled = np.random.default_rng(1).permutation(slides)
    independent = evaluate_predictions(y, p, 0.5, n_boot=400, slides=shuffled)
    ratio = _width(independent, "at_chosen.accuracy") / _width(over_patches, "at_chosen.accuracy")
    assert 0.7 < ratio < 1.4


def test_paired_tests_resample_slides():
    y, p_a, slides = _correlated(seed=2)
    p_b = np.clip(p_a + np.random.default_rng(3).normal(0, 0.15, p_a.size), 0, 1)
    right_a, right_b = (p_a >= 0.5) == y, (p_b >= 0.5) == y
    slide_level = paired_accuracy_difference(right_a, right_b, 300, groups=slides)
    patch_level = paired_accuracy_difference(right_a, right_b, 300)
    assert slide_level["unit"] == "slides" and patch_level["unit"] == "patches"
    assert slide_level["diff"] == pytest.approx(right_a.mean() - right_b.mean())
    assert np.diff(slide_level["ci"])[0] > np.diff(patch_level["ci"])[0]

    def preds(name, prob, ids):
        return Predictions(run=name, model=name, split="test", y_true=y, y_prob=prob,
                           threshold=0.5, slides=ids)

    over_slides = paired_comparison([preds("a", p_a, slides), preds("b", p_b, slides)])
    assert over_slides["unit"] == "slides" and "mcnemar_p" not in over_slides
    assert over_slides["n_slides"] == 40 and over_slides["n_boot"] == 1000
    text = comparison_text(over_slides)
    assert "from 40 slides" in text and "paired bootstrap over slides" in text
    assert "replaces McNemar's test" in text and "p = " in text
    # Without, with disagreeing or with too few slide ids: McNemar over patches, as before.
    few = np.where(y == 1, "s1", "s2")
    for ids_a, ids_b in ((slides, None), (slides, slides[::-1]), (few, few)):
        over_patches = paired_comparison([preds("a", p_a, ids_a), preds("b", p_b, ids_b)])
        assert over_patches["unit"] == "patches" and "mcnemar_p" in over_patches
        text = comparison_text(over_patches)
        assert "McNemar's test on correctness" in text and "likely too optimistic" in text


# --- predictions, record, README -----------------------------------------------------------


def test_predictions_file_keeps_slides(tmp_path):
    from pcam.evaluation.evaluate import _score

    ids = [f"s{i // 2}" for i in range(24)]  # 12 slides of 2 patches
    pred = {"y_true": np.arange(24).astype(np.uint8) % 2,
            "y_prob": np.linspace(0.1, 0.9, 24).astype(np.float32),
            "slides": np.array(ids)}
    assert save_predictions(tmp_path, "test", pred) == "predictions/test.npz"
    with np.load(tmp_path / "predictions" / "test.npz") as saved:
        assert saved["slides"].tolist() == ids  # str, so no pickle is needed to read it
    record = {"run": "r", "model": "mobilenet", "predictions": {"test": "predictions/test.npz"}}
    loaded = load_predictions(tmp_path, record, "test")
    assert loaded.slides.tolist() == ids
    scores = _score(pred, {"value": 0.5})["single"]
    assert scores["bootstrap_unit"] == "slides" and scores["n_slides"] == 12
    del pred["slides"]
    assert _score(pred, {"value": 0.5})["single"]["bootstrap_unit"] == "patches"


def test_record_and_readme_say_which_unit(tmp_path):
    results = tmp_path / "results"
    for run, model, seed in (("m", "mobilenet", 1), ("r", "resnet50", 2)):
        make_run(results, run, model, seed=seed, slides=12)  # validated by conftest
    records = [read_record(results / run) for run in ("m", "r")]
    test = records[0]["metrics"]["test"]
    for variant in ("single", "tta"):
        assert test[variant]["bootstrap_unit"] == "slides" and test[variant]["n_slides"] == 12
        assert test[variant]["bootstrap_seed"] == 0
    assert load_predictions(results / "m", records[0], "test").slides.size == 120
    table = results_table(records)
    # train comes from Keras' running metrics: no interval there
    assert f"| {CI_ROW} |  | slides | slides | slides |  | slides |" in table
    text = protocol_text(records)
    assert "interval over slides (20 resamples, seed 0): whole slides" in text
    assert "likely too narrow" not in text


def test_old_records_report_patches_and_their_tie_rule(tmp_path):
    records = [read_record(SCHEMA1 / run) for run in ("mobilenet-subset", "resnet50-subset")]
    table = results_table(records)
    assert f"| {CI_ROW} | patches | patches | patches | patches |" in table
    text = protocol_text(records)
    assert ("interval over patches (1,000 resamples, seed 0), resampled one by one: these data "
            "have no slide ids") in text
    assert "so these intervals are likely too narrow" in text
    assert "the rule named no tie-break: of tied maxima of J the highest threshold" in text


def test_valid_held_out_from_train_is_said_to_be_optimistic(tmp_path):
    run = make_run(tmp_path / "results", "m", "mobilenet")
    record = read_record(run)
    assert "same slides as train" not in protocol_text([record])  # no hold-out recorded
    record["data"]["info"].update(holdout=2000, mapping={
        "valid": "2000 held out from pcam-subset/train (stratified, seed 0)",
        "test": "pcam-subset/valid", "train": "pcam-subset/train minus the 2000 held out"})
    text = protocol_text([record])
    assert ("so it is optimistic. Here it is optimistic for a second reason: valid is 2,000 "
            "patches held out at random from the imported train images, so it comes from the "
            "same slides as train, while test "
            "(`pcam-subset/valid`) is a separate split of the source, which for PCam means other "
            "slides: valid scores track train's, not test's. *test*:") in text


def test_published_subset_records_still_report():
    """The published records (no slide ids, imported with a hold-out) report, and say so."""
    folders = [PROJ_ROOT / "results" / run for run in ("mobilenet-subset", "resnet50-subset")]
    if not all((folder / "record.json").exists() for folder in folders):
        pytest.skip("no published subset records in results/")
    records = [read_record(folder) for folder in folders]
    assert f"| {CI_ROW} | patches |" in results_table(records)
    text = protocol_text(records)
    assert "valid is 2,000 patches held out at random" in text
    assert "likely too narrow" in text
    assert "among tied maxima of J, the threshold nearest 0.5 (then the lower one)" in text


# --- the threshold's tie rule --------------------------------------------------------------


def test_tied_maxima_of_youden_take_the_threshold_nearest_half():
    # 4 positives, 4 negatives. J = 0.5 after 0.8 (placed at 0.75), after 0.6 (at 0.525)
    # and after 0.4 (at 0.3): three tied maxima.
    y = np.array([1, 1, 0, 1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.45, 0.4, 0.2, 0.1])
    assert choose_threshold(y, p) == pytest.approx(0.525)
    order = np.random.default_rng(0).permutation(y.size)
    assert choose_threshold(y[order], p[order]) == pytest.approx(0.525)  # file order: no say
    # Two tied maxima as far from 0.5 (0.6875, 0.3125, exact in binary): the lower one.
    y = np.array([1, 0, 1, 0])
    p = np.array([0.75, 0.625, 0.375, 0.25])
    assert choose_threshold(y, p) == 0.3125
    assert "among tied maxima of J, the threshold nearest 0.5 (then the lower one)" in (
        THRESHOLD_RULE)
