"""The classifier most applications put on top (global average pooling and a Dense layer), as Keras builds it."""

from __future__ import annotations

from convkit import layers


def gap_classifier(classes, classifier_activation, pool_name=None, dropout=0.0, kernel_initializer="glorot_uniform"):
    """``classifier`` for ``imagenet_utils.finish_model``: global average pooling (named ``pool_name``), dropout
    ``dropout`` ('top_dropout') when positive, and the Dense 'predictions' layer."""
    def classifier(x):
        x = layers.GlobalAveragePooling2D(name=pool_name)(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="top_dropout")(x)
        return layers.Dense(classes, activation=classifier_activation, kernel_initializer=kernel_initializer,
                            name="predictions")(x)

    return classifier
