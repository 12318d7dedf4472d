"""Training techniques: hooks into the tf.data pipeline or the model, keyed on (seed, epoch, step)."""
