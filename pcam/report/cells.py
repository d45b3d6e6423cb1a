"""How one number is written in a README table cell, the same in every block.

Percentages with one decimal and "± h" the half-width of a 95% interval;
timings to two significant figures; "–" where there is no number.
"""

import math

DASH = "–"


def percent_cell(value, ci=None) -> str:
    """`value` as a percentage with one decimal, "± h" when `ci` is given; "–" when
    there is no finite value (a metric undefined on one class is not "nan ± 0.8")."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return DASH
    text = f"{100 * value:.1f}"
    if ci and all(isinstance(v, int | float) and math.isfinite(v) for v in ci):
        text += f" ± {100 * (ci[1] - ci[0]) / 2:.1f}"
    return text


def round_sig(value: float, digits: int = 2) -> str:
    """`value` to `digits` significant figures, as text: 19.6 -> "20", 876.4 -> "880".

    Timings on a shared machine vary up to 2x between runs, so more figures
    than two would be noise.
    """
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    rounded = float(f"{value:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:,.{decimals}f}"
