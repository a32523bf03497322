"""The installed distribution's version, single-sourced from its metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("langchain-attribot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
