"""`python -m pcam ...`: see `pcam.cli`."""

from pcam.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
