"""Acceleration that plugs into the sampling loop: warm starts (RTI) and block caching."""
