"""Experimental CuPy paths ("fused_graph", "tiled", "persistent", "cluster"): ``impl=`` asks for them by name."""

from . import sources as _sources  # noqa: F401 - registers the experimental kernel parts with ..sources
