"""Every convolution and pooling layer of the models in the course notes (SPEC.md),
at each model's documented batch size. Used by the benchmarks and the op tests.

conv: (model, batch, H, W, C_in, filters, kernel, padding)
pool: (model, batch, H, W, C, pool, strides, padding, kind)   kind: 'max' | 'avg'
"""

CONV = [
    ("lenet5", 128, 28, 28, 1, 6, 5, "same"),
    ("lenet5", 128, 14, 14, 6, 16, 5, "valid"),
    ("lenet5", 128, 5, 5, 16, 120, 5, "valid"),
    ("lenet5_subclassed", 32, 28, 28, 1, 6, 5, "same"),
    ("lenet5_subclassed", 32, 14, 14, 6, 16, 5, "same"),
    ("mnist_cnn", 128, 28, 28, 1, 32, 3, "valid"),
    ("mnist_cnn", 128, 26, 26, 32, 64, 3, "valid"),
    ("mnist_cnn2", 500, 28, 28, 1, 16, 5, "same"),
    ("mnist_cnn2", 500, 14, 14, 16, 32, 5, "same"),
    ("mnist_cnn3", 32, 28, 28, 1, 16, 3, "same"),
    ("mnist_cnn3", 32, 14, 14, 16, 32, 3, "same"),
    ("mnist_cnn3", 32, 7, 7, 32, 64, 3, "same"),
    ("fashion1", 512, 28, 28, 1, 32, 3, "same"),
    ("fashion1", 512, 28, 28, 32, 32, 3, "same"),
    ("fashion2", 512, 14, 14, 32, 32, 3, "same"),
    ("fashion2", 512, 7, 7, 32, 32, 3, "same"),
    ("fashion3", 512, 14, 14, 32, 64, 3, "valid"),
    ("fashion3", 512, 6, 6, 64, 128, 3, "same"),
    ("cifar10_cnn", 128, 32, 32, 3, 32, 3, "valid"),
    ("cifar10_cnn", 128, 30, 30, 32, 32, 3, "valid"),
    ("cifar10_cnn", 128, 14, 14, 32, 64, 3, "valid"),
    ("cifar10_cnn", 128, 12, 12, 64, 64, 3, "valid"),
    ("cifar10_bn", 256, 32, 32, 3, 32, 3, "same"),
    ("cifar10_bn", 256, 16, 16, 32, 64, 3, "same"),
    ("cifar10_bn", 256, 8, 8, 64, 128, 3, "same"),
    ("cifar10_deep", 256, 32, 32, 32, 32, 3, "same"),
    ("cifar10_deep", 256, 16, 16, 64, 64, 3, "same"),
    ("cifar10_deep", 256, 4, 4, 128, 128, 3, "same"),
    ("cifar10_deep", 256, 2, 2, 128, 256, 3, "same"),
]

POOL = [
    ("lenet5", 128, 28, 28, 6, 2, 2, "valid", "max"),
    ("lenet5", 128, 10, 10, 16, 2, 2, "valid", "max"),
    ("mnist_cnn", 128, 24, 24, 64, 2, 2, "valid", "max"),
    ("mnist_cnn2", 500, 28, 28, 16, 2, 2, "valid", "max"),
    ("mnist_cnn3", 32, 7, 7, 64, 2, 2, "same", "max"),
    ("fashion2", 512, 28, 28, 32, 2, 2, "valid", "max"),
    ("fashion3", 512, 12, 12, 64, 2, 2, "valid", "max"),
    ("cifar10_cnn", 128, 28, 28, 32, 2, 2, "valid", "max"),
    ("cifar10_cnn", 128, 10, 10, 64, 2, 2, "valid", "max"),
    ("cifar10_bn", 256, 32, 32, 32, 2, 2, "same", "max"),
    ("cifar10_deep", 256, 16, 16, 64, 2, 2, "valid", "max"),
    ("cifar10_deep", 256, 2, 2, 256, 2, 2, "valid", "max"),
    ("densenet_transition", 128, 16, 16, 64, 2, 2, "valid", "avg"),
    ("resnet_small", 256, 8, 8, 64, 8, 8, "valid", "avg"),
]
