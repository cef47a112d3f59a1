"""Image augmentation, image files and directory-backed image datasets (NHWC float32)."""

from convkit.preprocessing import image
from convkit.preprocessing.image import (DataFrameIterator, DirectoryIterator, ImageDataGenerator, ImageDataset,
                                         NumpyArrayIterator, append_augmented, array_to_img,
                                         image_dataset_from_directory, img_to_array, load_image, load_img,
                                         save_img)

__all__ = ["ImageDataGenerator", "NumpyArrayIterator", "DirectoryIterator", "DataFrameIterator", "ImageDataset",
           "image_dataset_from_directory", "load_image", "append_augmented", "image", "load_img",
           "img_to_array", "array_to_img", "save_img"]
