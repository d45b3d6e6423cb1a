"""`python -m pcam ...`: see `pcam.app.cli`."""

from pcam.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
