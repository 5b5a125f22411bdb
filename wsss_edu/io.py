"""Reading images and masks from disk, with errors that name the file at fault; writing any file
atomically under a name no other writer uses (:func:`atomic_path`), and a lock for files that
several processes update (:func:`file_lock`)."""

from __future__ import annotations

import hashlib
import math
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataFileError, RunInProgress


def user_path(path) -> Path | None:
    """A path as a user typed it (a notebook parameter, a command-line option), resolved once and
    the same way everywhere: environment variables (``$HOME``, ``${SCRATCH}``; ``%VAR%`` on
    Windows) and ``~`` expanded, a relative path taken from the current folder (not
    from a notebook's folder, where papermill runs its kernel), made absolute. ``''`` / None stay
    None (not given)."""
    if path is None or str(path) == "":
        return None
    return Path(os.path.expandvars(str(path))).expanduser().absolute()


@contextmanager
def atomic_path(path):
    """A temporary path beside ``path`` to write to; on leaving the block it replaces ``path`` in
    one step, so a reader sees the old file or the new one, never half of one. Its name is unique
    (process, thread, random part): two writers of the same file at once (two notebooks, two
    ``--shard`` machines on one folder) never write into each other's temporary file, and the last
    to finish wins whole. On an error (disk full, Ctrl-C) the temporary file is removed and
    ``path`` is left as it was. The name ends in ``.tmp``, so no ``*.png`` / ``*.json`` glob of the
    folder takes it for a result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(
        f".{path.name}.{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}.tmp"
    )
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def lock_path(path) -> Path:
    """The lock file of :func:`file_lock` for ``path``: ``.<name>.lock`` in its folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextmanager
def file_lock(path, timeout: float = 600.0):
    """Hold an exclusive lock on ``.<name>.lock`` beside ``path`` (hidden, like the temporary
    files of :func:`atomic_path`) for the block: the read-modify-write of a file
    that several processes update (a notebook's metrics JSON) is done by one at a time. An OS lock
    (``fcntl.flock``; ``msvcrt.locking`` on Windows), released by the OS if its holder dies, so a
    killed run never leaves a stale lock. Waits at most ``timeout`` seconds, then raises an error
    naming the lock file."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as f:
        deadline = time.monotonic() + timeout
        while not _try_lock(f):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{lock} is held by another process for over {timeout:.0f} s; "
                    "wait for it to finish (or stop it) and run again"
                )
            time.sleep(0.05)
        try:
            yield
        finally:
            _unlock(f)


def _try_lock(f) -> bool:
    try:
        if os.name == "nt":
            import msvcrt  # Windows only

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl  # POSIX only

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(f) -> None:
    if os.name == "nt":
        import msvcrt  # Windows only

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl  # POSIX only

        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Grey modes of more than 8 bits a camera or a scanner writes (16-bit PNG / TIFF)."""


def _bomb_error(path, what: str, e: Exception) -> DataFileError:
    """The error for an image over PIL's decompression-bomb limit: names the file and both fixes."""
    return DataFileError(
        f"{what} {path} is larger than PIL's decompression-bomb limit ({e}). If the file is "
        "trusted, raise the limit before loading it: `import PIL.Image; PIL.Image.MAX_IMAGE_PIXELS "
        "= <pixels>` (None removes it); else remove the file."
    )


def _wide_grey_to_uint8(arr: np.ndarray, path) -> np.ndarray:
    """A 16-bit grey image (values 0..65535) as 8 bits by the rule ``value >> 8`` (the top byte:
    the format's full range maps to 0..255, the same scale for every image of a dataset).
    Negative values or values above 16 bits have no such rule: refused naming the file."""
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise DataFileError(
            f"image {path} is a {arr.dtype} grey image with values {lo}..{hi}, outside the 16-bit "
            "range 0..65535 this loader converts (value >> 8); convert it to 8-bit RGB yourself"
        )
    return (arr.astype(np.uint32) >> 8).astype(np.uint8)


def read_image(path) -> np.ndarray:
    """Read an RGB image as uint8 (H, W, 3), C-contiguous.

    A 16-bit grey image (PIL mode 'I;16' / 'I', a 16-bit PNG or TIFF) is converted by the rule
    ``value >> 8`` (PIL's own conversion clips every value above 255 to white) and repeated over
    the three channels; a float image (mode 'F') is refused. An image over PIL's
    decompression-bomb limit is refused naming the file and ``PIL.Image.MAX_IMAGE_PIXELS``."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode in _WIDE_GREY_MODES:
                grey = _wide_grey_to_uint8(np.asarray(im), path)
                arr = np.repeat(grey[..., None], 3, axis=2)
            elif im.mode == "F":
                raise DataFileError(
                    f"image {path} holds floating-point values (PIL mode 'F'); "
                    "expected an 8-bit RGB or grey image: convert it first"
                )
            else:
                arr = np.array(
                    im.convert("RGB"), dtype=np.uint8
                )  # a writable copy: pydensecrf refuses read-only arrays
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb_error(path, "image", e) from e
    except (OSError, ValueError) as e:
        if isinstance(e, DataFileError):
            raise
        raise DataFileError(
            f"cannot read image {path}: {e}. Re-download or remove the file."
        ) from e
    return np.ascontiguousarray(arr)


def read_mask(path) -> np.ndarray:
    """Read a label PNG as its raw indices, uint8 (H, W).

    Masks are 8-bit palette ('P') or grey ('L') images. A wider grey image ('I;16', 'I') is
    accepted only when every value is a possible index 0..255 (then it is the same map); a value
    outside (e.g. -1 in an int32 mask) is refused naming the file and the values, never wrapped
    to 255 (ignore). Which indices are classes is the dataset's business:
    :func:`check_label_values`."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L") + _WIDE_GREY_MODES:
                raise DataFileError(
                    f"mask {path} has mode {im.mode}; expected a palette ('P') or grey ('L') PNG of "
                    "class indices"
                )
            mode, arr = im.mode, np.asarray(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb_error(path, "mask", e) from e
    except OSError as e:
        raise DataFileError(f"cannot read mask {path}: {e}. Re-download or remove the file.") from e
    if arr.dtype != np.uint8:
        bad = (arr < 0) | (arr > 255)
        if bad.any():
            values = np.unique(arr[bad])
            shown = ", ".join(str(int(v)) for v in values[:10]) + (
                ", ..." if len(values) > 10 else ""
            )
            raise DataFileError(
                f"mask {path} is a {arr.dtype} image (PIL mode {mode}) holding values {shown} "
                f"({int(bad.sum())} pixels) outside 0..255; a mask must be an 8-bit palette or grey "
                "PNG of class indices (255 = ignore): rewrite it with those values"
            )
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def check_label_values(
    mask: np.ndarray, path, num_classes: int, extra=(255,), hint: str = ""
) -> None:
    """Raise :class:`DataFileError` unless every value of the uint8 ``mask`` read from ``path`` is
    a class index ``0..num_classes-1`` or one of ``extra`` (255 = ignore by default); the message
    names the file, the impossible values with their pixel counts and the valid ones.

    Run on every load, so it is cheap: with 255 the only extra value (or extras that continue
    the class range), ``max(mask + 1)`` in uint8 (255 wraps to 0) settles it in one pass, about
    0.01-0.02 ms for a 500x375 mask (reading the image and mask takes ~6 ms); other extras cost
    a ``bincount`` (about 0.3 ms). The values and their pixel counts are gathered only for the
    error."""
    top = num_classes
    rest = set(int(v) for v in extra)
    while top in rest:  # e.g. CamVid's void 11 right after its classes 0..10
        rest.discard(top)
        top += 1
    if rest == {255}:
        if int((mask + np.uint8(1)).max(initial=0)) <= top:
            return
    elif int(mask.max(initial=0)) < (top if not rest else num_classes):
        return
    counts = np.bincount(mask.ravel(), minlength=256)
    counts[:num_classes] = 0
    for v in extra:
        counts[v] = 0
    bad = np.flatnonzero(counts)
    if len(bad) == 0:
        return
    shown = ", ".join(f"{int(v)} ({int(counts[v])} px)" for v in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    valid = ", ".join(
        [f"0..{num_classes - 1}"] + [f"{v} (ignore)" if v == 255 else str(v) for v in extra]
    )
    fix = hint or "the mask belongs to another dataset or class list: fix or remove the file"
    raise DataFileError(
        f"mask {path} holds class ids {shown}{more} that no class has; valid for "
        f"these {num_classes} classes: {valid}. {fix}"
    )


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path, mask_path) -> None:
    """Raise :class:`DataFileError` naming both files when a mask's size differs from its image's."""
    if image.shape[:2] != mask.shape[:2]:
        raise DataFileError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
            f"{image.shape[1]}x{image.shape[0]}; the pair does not belong together (fix or remove it)"
        )


def read_id_map(path) -> np.ndarray:
    """Read a grey PNG of integer ids of any depth (8 or 16 bit, e.g. Cityscapes' instanceIds) as
    int32 (H, W)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb_error(path, "id map", e) from e
    except OSError as e:
        raise DataFileError(
            f"cannot read id map {path}: {e}. Re-download or remove the file."
        ) from e
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
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_image(path, image: np.ndarray, quality: int = 95) -> None:
    """Write an RGB uint8 image, atomically; JPEG when the suffix says so, else PNG."""
    im = Image.fromarray(np.ascontiguousarray(image.astype(np.uint8)))
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        if fmt == "JPEG":
            im.save(tmp, format=fmt, quality=quality, subsampling=0)
        else:
            im.save(tmp, format=fmt)


def folder_complete(folder) -> bool:
    """Whether a folder of per-image files (CAMs, pseudo-labels, ...) was written whole: its
    'complete' marker exists (:func:`mark_folder_complete`)."""
    return (Path(folder) / "complete").exists()


def mark_folder_complete(folder, n: int) -> None:
    """Write the 'complete' marker of a folder of ``n`` per-image files: a resumed pass skips it."""
    write_text_atomic(Path(folder) / "complete", f"{n} images\n")


# ------------------------------------------------------------------------------------------------
# Digests beside files, and a lock that names its holder
# ------------------------------------------------------------------------------------------------


def digest_path(path) -> Path:
    """Where the SHA-256 digest of ``path`` is kept: ``<path>.sha256`` (``sha256sum`` format)."""
    return Path(f"{path}.sha256")


def file_digest(path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_digest(path) -> Path:
    """Write the digest of ``path`` beside it, atomically, *after* the file itself: a crash between
    the two leaves a file without (or with another file's) digest, which :func:`digest_problem`
    reports, never a digest that vouches for a file it was not computed from."""
    return write_text_atomic(digest_path(path), f"{file_digest(path)}  {Path(path).name}\n")


@contextmanager
def atomic_path_with_digest(path):
    """:func:`atomic_path`, then :func:`write_digest`, the two under one lock (the digest's,
    ``.<name>.sha256.lock``; not the ``.<name>.lock`` a computation of ``path`` may hold): two
    writers of the same file at once (threads, or processes without the computation's lock) never
    leave one's bytes beside the other's digest — which the next load would call damaged. Measured:
    4 threads each writing one artifact 15 times left a mismatched pair once in a CI run
    (tests/test_faults.py has the interleaving that does it every time)."""
    with file_lock(digest_path(path)):
        with atomic_path(path) as tmp:
            yield tmp
        write_digest(path)


def digest_problem(path) -> str | None:
    """Why ``path`` cannot be trusted (no digest beside it, a digest that does not match its bytes:
    a flipped bit, a truncated or foreign file), or None when its digest matches."""
    d = digest_path(path)
    try:
        expected = d.read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return f"it has no digest ({d.name} missing or empty)"
    try:
        actual = file_digest(path)
    except OSError as e:
        return f"it cannot be read ({e})"
    if actual != expected:
        return f"its bytes do not match its digest {d.name} (damaged, truncated or replaced)"
    return None


@contextmanager
def run_lock(path, wait: float, what: str):
    """Hold ``.<name>.lock`` beside ``path`` (:func:`file_lock`: an OS lock, released when its holder dies, so a
    killed run never leaves a stale lock) for a long computation of ``path`` (a training, a cached
    artifact), writing who holds it to ``.<name>.owner`` beside it. When another live process holds it, a
    message naming that process and the lock file goes to stderr and this waits up to ``wait``
    seconds (``math.inf``: until it finishes), then raises :class:`~wsss_edu.errors.RunInProgress`
    naming them. ``what`` names the computation in the messages.

    The lock is ``fcntl.flock``: sure on a local disk; on NFS it holds between machines only where
    the client maps flock to NFS locks (Linux NFSv4 does; NFSv3 needs lockd) — check yours before
    sharing an output folder between machines."""
    lock, owner = lock_path(path), Path(path).with_name(f".{Path(path).name}.owner")
    with ExitStack() as stack:
        try:
            stack.enter_context(file_lock(path, timeout=0.1))
        except TimeoutError:
            holder = _read_holder(owner)
            if wait <= 0.1:
                raise RunInProgress(
                    f"{what} is already running in {holder} (it holds {lock}): wait for "
                    "it to finish, or stop it, then run again"
                ) from None
            print(
                f"{what} is running in {holder} (it holds {lock}): waiting for it to finish"
                + ("" if math.isinf(wait) else f" (at most {wait:.0f} s)"),
                file=sys.stderr,
                flush=True,
            )
            try:
                stack.enter_context(file_lock(path, timeout=wait))
            except TimeoutError:
                raise RunInProgress(
                    f"{what} is still running in {_read_holder(owner)} after {wait:.0f} s "
                    f"(it holds {lock}): wait for it to finish, or stop it, then run "
                    "again"
                ) from None
        write_text_atomic(
            owner,
            f"process {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n",
        )
        try:
            yield
        finally:
            owner.unlink(missing_ok=True)


def _read_holder(owner: Path) -> str:
    """Who holds a :func:`run_lock` (its owner file), or a vaguer phrase while it is not written."""
    try:
        return owner.read_text().strip() or "another process"
    except OSError:
        return "another process"
