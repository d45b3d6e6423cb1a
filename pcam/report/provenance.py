"""What the report says about where its numbers come from.

A published number must trace to a commit: a run trained from a dirty tree
(`environment.git.dirty` in its record, see `pcam.core.environment.git_state`) is
refused, unless the caller allows it, and then named under the table. Figures
drawn from a run's checkpoint are marked, since checkpoints are not committed.
"""

from pcam.core.errors import PCamError

NEEDS_CHECKPOINT = ("needs the run's checkpoint (not committed): `pcam report` redraws it "
                    "where `results/<run>/inference.keras` or `checkpoints/best.keras` exists "
                    "and otherwise keeps "
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


def untraced_runs(records: list[dict]) -> list[dict]:
    """The records whose commit or cleanliness could not be established (git missing
    or unreadable when the run was made): provenance fails closed, like a dirty tree."""
    return [r for r in records
            if _git(r).get("dirty") is not False or not _git(r).get("commit")]


def check_clean(records: list[dict], *, allow_dirty: bool = False) -> None:
    """Refuse to publish runs that cannot be traced to a clean commit, unless `allow_dirty`.

    Raises:
        PCamError: naming each such run and its commit, saying to retrain it
            from a clean committed tree or to pass --allow-dirty.
    """
    if allow_dirty:
        return
    unknown = [r for r in untraced_runs(records) if r not in dirty_runs(records)]
    if unknown:
        names = ", ".join(r["run"] for r in unknown)
        raise PCamError(
            f"published run(s) {names}: the record does not say which commit the run was "
            "trained from, or whether the tree was clean (git was missing or could not read "
            "the repository), so the numbers cannot be traced; retrain from a clean committed "
            "tree where `git status` works, or pass --allow-dirty to publish them marked as "
            "untraced under the table")
    dirty = dirty_runs(records)
    if not dirty:
        return
    names = ", ".join(f"{r['run']} (commit {short_commit(r)})" for r in dirty)
    one = len(dirty) == 1
    raise PCamError(
        f"published run{'' if one else 's'} {names} {'was' if one else 'were'} trained from a "
        "dirty tree (uncommitted changes, not stored in the record), so the numbers cannot be "
        f"traced to a commit; retrain {'it' if one else 'them'} from a clean committed tree, "
        "or pass --allow-dirty to publish them marked as such under the table")


def dirty_note(records: list[dict]) -> str:
    """The paragraph under the table naming runs made from a dirty tree or an unknown
    one; "" when none."""
    dirty = untraced_runs(records)
    if not dirty:
        return ""
    runs = "; ".join(
        f"run `{r['run']}`: made from a dirty tree at commit {short_commit(r)}"
        if _git(r).get("dirty") is True and _git(r).get("commit") else
        f"run `{r['run']}`: commit or tree state unknown (git unavailable when it ran)"
        for r in dirty)
    return (f"**Dirty tree:** {runs}. The uncommitted changes are not stored, so these "
            "numbers cannot be traced to a commit exactly; retraining from a clean tree "
            "removes this note.")
