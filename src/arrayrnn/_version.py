"""The package version (one place: read by the build and by arrayrnn.__version__)."""

__version__ = "0.1.0"
