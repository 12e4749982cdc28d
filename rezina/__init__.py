"""rezina: plain Python functions in parallel across processes and machines."""

__version__ = '0.2.0.dev0'
