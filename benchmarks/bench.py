"""Benchmark arrayrnn against torch and onnxruntime: a thin script over ``arrayrnn._tools.bench``.

    python benchmarks/bench.py [--cells lstm,gru,rnn] [--quick] [--repeats N] [--plot] [--out DIR]

Same options as ``arrayrnn bench``; results land in ``benchmarks/results/``.
"""

import sys

from arrayrnn._tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
