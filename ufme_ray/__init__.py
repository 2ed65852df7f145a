"""UFME-Ray: a face-matching engine on Ray Serve."""

__version__ = "0.1.0"
