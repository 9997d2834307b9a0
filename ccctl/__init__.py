"""ccctl: the operator's toolkit for a national command-center video network."""

__version__ = "0.1.0"
