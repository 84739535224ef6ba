"""``python -m arrayrnn``: the command line (``arrayrnn info``, ``demo``, ``bench``)."""

from ._tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
