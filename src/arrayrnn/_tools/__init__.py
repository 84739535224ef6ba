"""The command line behind ``arrayrnn`` and ``python -m arrayrnn``: ``info``, ``demo``, ``bench`` and their helpers."""
