"""accessfabric: a distributed secure access fabric."""

__version__ = "0.1.0"
