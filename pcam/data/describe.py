"""The run record's "data" section: which folder a run trained on, and how much of it.

It reads the HDF5 labels, so it lives with the data code; `pcam.records` only
stores the section it is handed (see `pcam/record.schema.json`, "data").
"""

import os

from pcam.data.h5read import Split, read_dataset_info, read_labels
from pcam.paths import display_path


def data_section(config, data_dir: str | os.PathLike, splits: dict[str, Split]) -> dict:
    """What a run reads from `data_dir`: the record's "data" section.

    Args:
        config: the run's `pcam.config.TrainConfig`; `max_samples` caps train,
            `max_eval_samples` caps valid and test (None: the whole split).
        data_dir: the PCam-layout folder the splits were opened from.
        splits: split name ("train", "valid", "test") -> `Split` from
            `pcam.data.h5read.open_split`.

    Returns:
        dict: `dir` (display path, no machine path), `info` (the folder's
        `dataset.json`, see `read_dataset_info`), `synthetic` (bool) and
        `splits` ({name: {"n": patches used, "n_file": patches in the file,
        "positives": positives among the n used}}).
    """
    info = read_dataset_info(data_dir)
    section = {"dir": display_path(data_dir), "info": info,
               "synthetic": bool(info.get("synthetic", False)), "splits": {}}
    for name, split in splits.items():
        cap = config.max_samples if name == "train" else config.max_eval_samples
        n = split.length if cap is None else min(cap, split.length)
        section["splits"][name] = {"n": n, "n_file": split.length,
                                   "positives": int(read_labels(split)[:n].sum())}
    return section
