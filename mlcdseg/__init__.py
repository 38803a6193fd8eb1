"""mlcdseg: MLCD-Seg referring-expression segmentation for Label Studio."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The installed distribution's version (pyproject.toml is its one source).
    __version__ = version("mlcdseg")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
