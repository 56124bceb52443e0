"""A multi-provider routing gateway for Hailuo 2.3 video generation."""

__version__ = "0.1.0"
