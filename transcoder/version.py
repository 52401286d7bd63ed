"""The engine's version: one place, read by the package, the manifest and the build (setup.cfg)."""

__version__ = "0.1.0"
