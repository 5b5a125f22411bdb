"""Reading images and masks from disk, with errors that name the file at fault."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataFileError


def read_image(path) -> np.ndarray:
    """Read an RGB image as uint8 (H, W, 3), C-contiguous."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"), dtype=np.uint8)   # a writable copy: pydensecrf refuses read-only arrays
    except (OSError, ValueError) as e:
        raise DataFileError(f"cannot read image {path}: {e}. Re-download or remove the file.") from e
    return np.ascontiguousarray(arr)


def read_mask(path) -> np.ndarray:
    """Read a label PNG (palette or grey) as its raw indices, uint8 (H, W)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DataFileError(
                    f"mask {path} has mode {im.mode}; expected a palette ('P') or grey ('L') PNG of "
                    "class indices")
            arr = np.asarray(im)
    except OSError as e:
        raise DataFileError(f"cannot read mask {path}: {e}. Re-download or remove the file.") from e
    if arr.dtype != np.uint8:
        if arr.max(initial=0) > 255:
            raise DataFileError(f"mask {path} holds values above 255; expected class indices")
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path, mask_path) -> None:
    """Raise :class:`DataFileError` naming both files when a mask's size differs from its image's."""
    if image.shape[:2] != mask.shape[:2]:
        raise DataFileError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
            f"{image.shape[1]}x{image.shape[0]}; the pair does not belong together (fix or remove it)")


def read_id_map(path) -> np.ndarray:
    """Read a grey PNG of integer ids of any depth (8 or 16 bit, e.g. Cityscapes' instanceIds) as
    int32 (H, W)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except OSError as e:
        raise DataFileError(f"cannot read id map {path}: {e}. Re-download or remove the file.") from e
    if arr.ndim != 2:
        raise DataFileError(f"id map {path} has shape {arr.shape}; expected a single-channel PNG")
    return arr.astype(np.int32)


def write_mask(path, mask: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write a uint8 label map as a PNG (grey, or with a palette when given, VOC style),
    atomically: a half-written file never looks done to a resumed run."""
    im = Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8)))
    if palette is not None:
        im = im.convert("P")
        im.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    im.save(tmp, format="PNG")
    tmp.replace(path)


def write_image(path, image: np.ndarray, quality: int = 95) -> None:
    """Write an RGB uint8 image; JPEG when the suffix says so, else PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(image.astype(np.uint8)))
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=quality, subsampling=0)
    else:
        im.save(path)


def folder_complete(folder) -> bool:
    """Whether a folder of per-image files (CAMs, pseudo-labels, ...) was written whole: its
    'complete' marker exists (:func:`mark_folder_complete`)."""
    return (Path(folder) / "complete").exists()


def mark_folder_complete(folder, n: int) -> None:
    """Write the 'complete' marker of a folder of ``n`` per-image files: a resumed pass skips it."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "complete").write_text(f"{n} images\n")
