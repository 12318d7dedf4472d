"""Using a trained run's model: evaluate a split, predict new inputs, export for use outside nnrun."""
