"""Greff et al. 2015, "LSTM: A Search Space Odyssey", on Bach chorales: ``python examples/odyssey.py --quick``.

The same as ``arrayrnn odyssey`` (every option of ``arrayrnn odyssey --help`` works here); needs music21 and
matplotlib: ``pip install ".[examples]"`` in a clone.
"""

import sys

from arrayrnn._tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["odyssey", *sys.argv[1:]]))
