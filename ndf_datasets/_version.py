"""The package version (one place; the package and the conversion manifests read it)."""

__version__ = "0.1.0"
