"""nnrun: a YAML-driven experiment runner for TensorFlow / Keras 3."""

__version__ = "0.1.0"
