"""Benchmarks (``dpctrl bench ...``): each over the one timing harness in ``timing.py``."""
