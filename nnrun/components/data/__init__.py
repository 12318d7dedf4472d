"""Data sets: each builder returns a DataBundle of in-memory splits (see base.py)."""
