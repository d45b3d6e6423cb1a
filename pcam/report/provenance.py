"""What the report says about where its numbers come from.

A published number must trace to a commit: a run trained from a dirty tree
(`environment.git.dirty` in its record, see `pcam.environment.git_state`) is
refused, unless the caller allows it, and then named under the table. Figures
drawn from a run's checkpoint are marked, since checkpoints are not committed.
"""

from pcam.errors import PCamError

NEEDS_CHECKPOINT = ("needs the run's checkpoint (not committed): `pcam report` redraws it "
                    "where `results/<run>/checkpoints/best.keras` exists and otherwise keeps "
                    "the file an earlier report drew")


def _git(record: dict) -> dict:
    return (record.get("environment") or {}).get("git") or {}


def short_commit(record: dict) -> str:
    """The commit a run was trained at, 7 hex digits ("unknown" without git)."""
    commit = _git(record).get("commit")
    return commit[:7] if commit else "unknown"


def dirty_runs(records: list[dict]) -> list[dict]:
    """The records whose run was trained from a tree with uncommitted changes."""
    return [r for r in records if _git(r).get("dirty") is True]


def check_clean(records: list[dict], *, allow_dirty: bool = False) -> None:
    """Refuse to publish runs trained from a dirty tree, unless `allow_dirty`.

    Raises:
        PCamError: naming each such run and its commit, saying to retrain it
            from a clean committed tree or to pass --allow-dirty.
    """
    dirty = dirty_runs(records)
    if not dirty or allow_dirty:
        return
    names = ", ".join(f"{r['run']} (commit {short_commit(r)})" for r in dirty)
    one = len(dirty) == 1
    raise PCamError(
        f"published run{'' if one else 's'} {names} {'was' if one else 'were'} trained from a "
        "dirty tree (uncommitted changes, not stored in the record), so the numbers cannot be "
        f"traced to a commit; retrain {'it' if one else 'them'} from a clean committed tree, "
        "or pass --allow-dirty to publish them marked as such under the table")


def dirty_note(records: list[dict]) -> str:
    """The paragraph under the table naming runs made from a dirty tree; "" when none."""
    dirty = dirty_runs(records)
    if not dirty:
        return ""
    runs = "; ".join(f"run `{r['run']}`: made from a dirty tree at commit {short_commit(r)}"
                     for r in dirty)
    return (f"**Dirty tree:** {runs}. The uncommitted changes are not stored, so these "
            "numbers cannot be traced to a commit exactly; retraining from a clean tree "
            "removes this note.")
