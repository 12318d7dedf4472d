"""Engine: builds the pieces from a resolved config, runs Keras `fit`, owns the run directory."""
