"""Reseller adapters for Hailuo 2.3. This package never imports from ``gateway``."""
