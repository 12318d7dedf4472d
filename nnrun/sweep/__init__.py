"""Sweeps: many `nnrun train` runs from one file (spec parsing is TensorFlow-free)."""

from nnrun.sweep.sweep_file import Sweep, Trial, load_sweep

__all__ = ["Sweep", "Trial", "load_sweep"]
