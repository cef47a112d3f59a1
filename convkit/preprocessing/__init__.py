"""Image augmentation and directory-backed image datasets (NHWC float32)."""

from convkit.preprocessing.image import (DirectoryIterator, ImageDataGenerator, ImageDataset,
                                         NumpyArrayIterator, append_augmented, image_dataset_from_directory,
                                         load_image)

__all__ = ["ImageDataGenerator", "NumpyArrayIterator", "DirectoryIterator", "ImageDataset",
           "image_dataset_from_directory", "load_image", "append_augmented"]
