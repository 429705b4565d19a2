"""matrixhs: a Matrix homeserver built on Twisted."""

__version__ = "0.1.0"
