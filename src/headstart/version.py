"""The version of headstart (also the one written into runs and exports)."""
__version__ = "0.1.0"
