"""A tiny segmentation task for the training-loop tests (test_train.py, test_faults_training.py,
test_distributed.py): dark noise images, each with one 6 x 6 red square labelled class 1."""

import numpy as np


def red_squares(n: int = 16, size: int = 16, background: int = 60, ignore_half: bool = False):
    """``{"image": (n, size, size, 3) uint8, "mask": (n, size, size) uint8}``, seeded: noise in
    [0, ``background``) with a red square (class 1) per image. ``ignore_half``: on every other
    image the left three quarters are ignored (255), so shares of the data hold very different
    numbers of labelled pixels."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, background, (n, size, size, 3)).astype(np.uint8)
    mask = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 6, 2)
        img[i, y : y + 6, x : x + 6] = (220, 40, 40)
        mask[i, y : y + 6, x : x + 6] = 1
        if ignore_half and i % 2:
            mask[i, :, : size * 3 // 4] = 255
    return {"image": img, "mask": mask}
