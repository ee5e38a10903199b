"""The package version, in a module of its own: any layer can record it without the package root."""

__version__ = "0.1.0"
