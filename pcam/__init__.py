"""pcam: transfer learning vs training from scratch on PatchCamelyon (PCam).

The package holds everything the notebooks and the command line share: the
data layer (download, checks, streaming input pipeline, synthetic data),
model builders, training, whole-split metrics, run records, plots and the
README results table.
"""

__version__ = "0.1.0"
