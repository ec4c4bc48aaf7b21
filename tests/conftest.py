"""Test-session settings shared by every test package."""
import os

import torch

# The fused decoder's Triton kernels (policy/accel/fused.py) are GPU kernels; where there is no
# GPU the tests run them in Triton's interpreter, which Triton selects when it is first
# imported, so the switch is set here, before any test imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
