"""tf.keras 2's ``layers.experimental`` namespace, kept for old code (Keras 3 removed it)."""
