"""valind: induce values into language models from preference data and measure the side effects."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("valind")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
