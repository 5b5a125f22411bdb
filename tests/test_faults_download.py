"""Fault injection for downloads and extractions (issue 24, items 1 and the download/CLI errors):
partial data never passes for complete, unverified downloads are never spliced, a full disk is
named with the fix, arguments are checked before any traffic, and a user's symlink is followed.

Everything runs against a local HTTP server on 127.0.0.1 and archives of a few bytes built here;
Ctrl-C and a full disk are injected by a patched writer that fails part-way through a member."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import io
import shutil
import tarfile
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from wsss_edu import download as dl
from wsss_edu.download import (
    SOURCES,
    UnverifiedDownloadWarning,
    complete_marker,
    download,
    extract,
    extracted_marker,
    fetch,
    is_in_place,
    part_path,
)
from wsss_edu.errors import DownloadError, ParameterError

try:
    from . import fixtures_http as fx_http
except ImportError:
    import fixtures_http as fx_http

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = bytes(range(256)) * 40  # 10 240 bytes
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
VOC_TAR = "VOCtrainval_11-May-2012.tar"


@pytest.fixture(scope="module")
def _http_server():
    """One local HTTP server (tests/fixtures_http.py) for the whole module."""
    with fx_http.local_server() as srv:
        yield srv


@pytest.fixture
def server(_http_server):
    return fx_http.reset(_http_server)


def _get(**kw):
    return download(progress=False, timeout=5, **kw)


def _tar_bytes(members: list) -> bytes:
    """A tar of (name, bytes) files, (name, None) folders and raw TarInfo entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
                continue
            name, data = m
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _voc_members(n_masks: int = 20) -> list[tuple[str, bytes]]:
    """A VOC-shaped tar: the four expected folders come first, then ``n_masks`` masks."""
    top = "VOCdevkit/VOC2012"
    first = [
        (f"{top}/{d}/x.txt", b"1")
        for d in ("JPEGImages", "Annotations", "ImageSets/Segmentation", "SegmentationClass")
    ]
    return first + [
        (f"{top}/SegmentationClass/{i:04d}.png", bytes([i]) * 3000) for i in range(n_masks)
    ]


def _voc_sources(data: bytes) -> dict:
    voc = SOURCES["voc"]
    return {
        "voc": replace(voc, archives=(replace(voc.archives[0], md5=hashlib.md5(data).hexdigest()),))
    }


def _failing_writer(monkeypatch, fail_on: int, error: BaseException):
    """Patch the writers of tarfile and zipfile: the ``fail_on``-th member written gets half its
    bytes, then ``error`` is raised (Ctrl-C, a full disk)."""
    calls = {"n": 0}
    real_tar, real_shutil = tarfile.copyfileobj, shutil.copyfileobj

    def make(real):
        def copy(src, dst, length=None, *args, **kw):
            calls["n"] += 1
            if calls["n"] == fail_on:
                data = src.read(length) if length else src.read()
                dst.write(data[: len(data) // 2])
                raise error
            return (
                real(src, dst, length, *args, **kw)
                if length is not None or real is real_tar
                else real(src, dst, *args, **kw)
            )

        return copy

    monkeypatch.setattr(tarfile, "copyfileobj", make(real_tar))
    monkeypatch.setattr(shutil, "copyfileobj", make(real_shutil))


# --------------------------------------------------------------------------------------------
# 1. partial extraction never passes for complete
# --------------------------------------------------------------------------------------------


def test_ctrl_c_mid_extraction_leaves_no_marker_and_the_rerun_extracts_again(
    server, tmp_path, monkeypatch, capsys
):
    members = _voc_members()
    data = _tar_bytes(members)
    server.files[f"/m/{VOC_TAR}"] = data
    sources, root, mirrors = _voc_sources(data), tmp_path / "data", [server.url + "/m/"]
    _failing_writer(monkeypatch, fail_on=10, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        fetch("voc", root, mirrors=mirrors, sources=sources, progress=False)
    voc = root / "VOCdevkit/VOC2012"
    assert all((voc / e).exists() for e in SOURCES["voc"].expected)  # the folders are there...
    assert not is_in_place("voc", root, sources)  # ...but not the marker
    assert not extracted_marker(VOC_TAR, root).exists() and not complete_marker(voc).exists()
    cut = voc / "SegmentationClass/0005.png"  # the 10th member
    assert not cut.exists()  # no half-written file left
    monkeypatch.undo()
    capsys.readouterr()
    fetch("voc", root, mirrors=mirrors, sources=sources)
    said = capsys.readouterr().err
    assert "already in place" not in said and "no completion marker" in said
    for name, body in members:
        assert (root / name).read_bytes() == body
    assert is_in_place("voc", root, sources) and complete_marker(voc).is_file()
    n = len(server.requests)
    fetch("voc", root, mirrors=mirrors, sources=sources)
    assert "already in place" in capsys.readouterr().err and len(server.requests) == n


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_disk_full_during_extraction_names_the_folder_the_space_and_the_fix(
    tmp_path, monkeypatch, kind
):
    members = [(f"top/{i}.bin", bytes([i]) * 2048) for i in range(6)]
    archive = tmp_path / f"a.{kind}"
    archive.write_bytes(_tar_bytes(members) if kind == "tar" else _zip_bytes(members))
    target = tmp_path / "out"
    _failing_writer(monkeypatch, fail_on=4, error=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DownloadError) as info:
        extract(archive, target, progress=False)
    msg = str(info.value)
    assert "disk is full" in msg and str(target) in msg and "12.0 KiB" in msg  # 6 x 2 KiB
    assert "--root" in msg and "bigger disk" in msg and "run again" in msg
    assert not extracted_marker(archive, target).exists()
    assert not (target / "top/3.bin").exists()  # the truncated member is gone
    assert (target / "top/2.bin").read_bytes() == bytes([2]) * 2048
    monkeypatch.undo()
    extract(archive, target, progress=False)  # the rerun extracts it all
    assert all((target / n).read_bytes() == b for n, b in members)
    assert extracted_marker(archive, target).is_file()


def test_zip_with_a_bad_crc_is_named_and_never_marked_complete(tmp_path):
    members = [("top/a.txt", b"A" * 500), ("top/b.txt", b"B" * 500), ("top/c.txt", b"C" * 500)]
    good = _zip_bytes(members)
    bad = bytearray(good)
    at = good.index(b"B" * 500)
    bad[at + 100] ^= 0xFF  # one flipped byte in the second member
    archive = tmp_path / "a.zip"
    archive.write_bytes(bytes(bad))
    target = tmp_path / "out"
    with pytest.raises(DownloadError) as info:
        extract(archive, target, progress=False)
    msg = str(info.value)
    assert str(archive) in msg and "CRC" in msg and "download it again" in msg
    assert not extracted_marker(archive, target).exists()
    assert not (target / "top/b.txt").exists()  # the damaged member is not left behind
    archive.write_bytes(good)  # downloaded again
    extract(archive, target, progress=False)
    assert all((target / n).read_bytes() == b for n, b in members)


def test_a_partial_dataset_folder_is_completed_and_the_users_files_kept(server, tmp_path):
    top = "MSRC_ObjCategImageDatabase_v2"
    members = [(f"{top}/Images/{i}_s.bmp", bytes([i]) * 800) for i in range(1, 5)]
    members += [(f"{top}/GroundTruth/{i}_s_GT.bmp", bytes([i]) * 400) for i in range(1, 5)]
    data = _zip_bytes(members)
    server.files["/msrc.zip"] = data
    msrc = SOURCES["msrc"]
    sources = {
        "msrc": replace(
            msrc,
            archives=(
                replace(
                    msrc.archives[0],
                    urls=(server.url + "/msrc.zip",),
                    md5=hashlib.md5(data).hexdigest(),
                ),
            ),
        )
    }
    root = tmp_path / "data"
    out = root / "msrc_v2"
    (out / "Images").mkdir(parents=True)  # left by an interrupted run
    (out / "GroundTruth").mkdir()
    (out / "Images/1_s.bmp").write_bytes(b"\x01" * 10)  # truncated
    (out / "newsegmentations_mats").mkdir()
    (out / "newsegmentations_mats/1_s.mat").write_bytes(b"user")  # the user's own
    assert not is_in_place("msrc", root, sources)
    assert fetch("msrc", root, sources=sources, progress=False) == out
    for name, body in members:
        assert (out / name.split("/", 1)[1]).read_bytes() == body
    assert (out / "newsegmentations_mats/1_s.mat").read_bytes() == b"user"
    assert complete_marker(out).is_file() and is_in_place("msrc", root, sources)
    assert not (root / "msrc_v2.unpack").exists()


# --------------------------------------------------------------------------------------------
# 2. downloads: a full disk, and files without a checksum
# --------------------------------------------------------------------------------------------


def test_disk_full_during_download_is_named_and_the_rerun_resumes(server, tmp_path, monkeypatch):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "dl" / "a.bin"
    real_open = open

    class Full:
        """A file that takes 4 000 bytes, then reports a full disk."""

        def __init__(self, f):
            self.f = f

        def write(self, chunk):
            room = 4000 - self.f.tell()
            if room < len(chunk):
                self.f.write(chunk[: max(room, 0)])
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(chunk)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(dl, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    with pytest.raises(DownloadError) as info:
        _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5)
    msg = str(info.value)
    assert "disk is full" in msg and str(dest.parent) in msg and "10.0 KiB" in msg
    assert "--root" in msg and not dest.exists()
    assert len(server.requests) == 1  # no other mirror or retry: it would not help
    monkeypatch.undo()
    _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/a.bin", "bytes=4000-")  # resumed, then verified


@pytest.mark.parametrize("style", ["close", "chunked"])
def test_unverified_body_cut_short_is_never_taken_for_the_file(server, tmp_path, style):
    server.files["/a.zip"] = PAYLOAD
    server.style["/a.zip"] = style
    server.cut["/a.zip"] = 3000
    dest = tmp_path / "a.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedDownloadWarning)
        if style == "close":  # no length at all: a cut cannot be told from the end
            with pytest.raises(DownloadError, match="no Content-Length and no chunked body"):
                _get(urls=[server.url + "/a.zip"], dest=dest)
            assert not dest.exists() and not part_path(dest).exists()
            return
        _get(urls=[server.url + "/a.zip"], dest=dest)  # chunked: the cut is seen, retried whole
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.zip", None), ("/a.zip", None)]  # never a Range


def test_unverified_close_delimited_body_is_refused_even_when_whole(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    server.style["/a.zip"] = "close"
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError) as info:
        _get(urls=[server.url + "/a.zip"], dest=dest)
    assert str(dest) in str(info.value) and "download the file yourself" in str(info.value)
    assert not dest.exists()
    dest2 = _get(urls=[server.url + "/a.zip"], dest=tmp_path / "b.zip", md5=PAYLOAD_MD5)
    assert dest2.read_bytes() == PAYLOAD  # with a checksum the same body is fine


@pytest.mark.parametrize(
    "stale", [b"\xff" * 4000, b"\xff" * len(PAYLOAD)], ids=["shorter", "full-size"]
)
def test_unverified_part_is_never_resumed(server, tmp_path, stale):
    server.files["/a.zip"] = PAYLOAD
    dest = tmp_path / "a.zip"
    part_path(dest).write_bytes(stale)  # another file's bytes, from an earlier run
    with pytest.warns(UnverifiedDownloadWarning) as record:
        _get(urls=[server.url + "/a.zip"], dest=dest)
    said = " ".join(str(w.message) for w in record)
    assert "never resumed" in said and "WITHOUT checksum" in said
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.zip", None)]


def test_unverified_dropped_connection_starts_again_from_zero(server, tmp_path):
    server.files["/a.zip"] = PAYLOAD
    server.cut["/a.zip"] = 3000  # Content-Length sent, body cut
    with pytest.warns(UnverifiedDownloadWarning):
        dest = _get(urls=[server.url + "/a.zip"], dest=tmp_path / "a.zip")
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.zip", None), ("/a.zip", None)]


def test_checksummed_part_of_full_size_but_wrong_bytes_is_downloaded_again(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(PAYLOAD[::-1])  # full size (416), wrong bytes
    _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", f"bytes={len(PAYLOAD)}-"), ("/a.bin", None)]


# --------------------------------------------------------------------------------------------
# 3. arguments checked before any traffic
# --------------------------------------------------------------------------------------------


def _script():
    spec = importlib.util.spec_from_file_location(
        "download_script", REPO / "data_scripts/download.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_cli_refuses_a_mirror_without_scheme_a_file_root_and_a_folder_destination(tmp_path, capsys):
    script = _script()
    cases = []
    cases.append(
        (
            ["voc", "--root", str(tmp_path), "--mirror", "example.org/voc"],
            ["'example.org/voc'", "http://", "https://", "ftp://"],
        )
    )
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases.append((["voc", "--root", str(a_file)], [str(a_file), "is a file"]))
    (tmp_path / "r/downloads" / VOC_TAR).mkdir(parents=True)
    cases.append(
        (
            ["voc", "--root", str(tmp_path / "r")],
            [str(tmp_path / "r/downloads" / VOC_TAR), "is a directory"],
        )
    )
    for argv, needles in cases:
        with pytest.raises(SystemExit) as info:
            script.main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, (argv, err)


def test_library_checks_mirrors_root_and_destination_before_any_request(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    with pytest.raises(ParameterError, match="http://"):
        fetch("voc", tmp_path, mirrors=["example.org/voc"], progress=False)
    with pytest.raises(ParameterError, match="example.org/a.bin"):
        _get(urls=[server.url + "/a.bin", "example.org/a.bin"], dest=tmp_path / "x.bin")
    (tmp_path / "d.bin").mkdir()
    with pytest.raises(DownloadError, match=f"{tmp_path / 'd.bin'}: it is a directory"):
        _get(urls=[server.url + "/a.bin"], dest=tmp_path / "d.bin", md5=PAYLOAD_MD5)
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(DownloadError, match=f"{a_file} is a file"):
        fetch("voc", a_file, mirrors=[server.url + "/"], progress=False)
    assert server.requests == []


# --------------------------------------------------------------------------------------------
# 4. a symlink the user made is followed; the archive's own links are still checked
# --------------------------------------------------------------------------------------------


def test_users_vocdevkit_symlinked_to_a_bigger_disk_is_followed(server, tmp_path):
    big = tmp_path / "big/VOCdevkit"
    big.mkdir(parents=True)
    root = tmp_path / "data"
    root.mkdir()
    (root / "VOCdevkit").symlink_to(big, target_is_directory=True)
    link = tarfile.TarInfo("VOCdevkit/VOC2012/JPEGImages/ln.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "x.txt"
    data = _tar_bytes([("VOCdevkit", None), ("VOCdevkit/VOC2012", None)] + _voc_members(3) + [link])
    server.files[f"/m/{VOC_TAR}"] = data
    out = fetch(
        "voc", root, mirrors=[server.url + "/m/"], sources=_voc_sources(data), progress=False
    )
    assert (root / "VOCdevkit").is_symlink()
    assert (big / "VOC2012/SegmentationClass/0002.png").read_bytes() == bytes([2]) * 3000
    assert (out / "JPEGImages/ln.txt").read_bytes() == b"1"
    assert is_in_place("voc", root, _voc_sources(data))


@pytest.mark.parametrize("member", ["VOCdevkit/../escaped.txt", "link-out"])
def test_a_user_symlink_does_not_open_a_way_out_for_the_archive(tmp_path, member):
    big = tmp_path / "big/VOCdevkit"
    big.mkdir(parents=True)
    root = tmp_path / "data"
    root.mkdir()
    (root / "VOCdevkit").symlink_to(big, target_is_directory=True)
    if member == "link-out":  # an archive link through the user's link, then out of it
        evil = tarfile.TarInfo("VOCdevkit/up")
        evil.type, evil.linkname = tarfile.SYMTYPE, ".."
        entries = [("VOCdevkit/VOC2012/a.txt", b"1"), evil]
    else:
        entries = [("VOCdevkit/VOC2012/a.txt", b"1"), (member, b"evil")]
    archive = tmp_path / "x.tar"
    archive.write_bytes(_tar_bytes(entries))
    with pytest.raises(DownloadError, match="refusing to extract"):
        extract(archive, root, progress=False)
    assert not (tmp_path / "big/escaped.txt").exists() and not (big / "up").exists()
    assert not extracted_marker(archive, root).exists()


def test_a_folder_extracted_by_an_earlier_version_counts_by_its_archive_marker(tmp_path):
    """Earlier versions wrote only the archive's extraction marker (written once the archive was
    wholly extracted): such a folder is in place; the folders alone are not."""
    root = tmp_path / "data"
    voc = root / SOURCES["voc"].dataset_dir
    for entry in SOURCES["voc"].expected:
        (voc / entry).mkdir(parents=True)
    assert not is_in_place("voc", root)
    extracted_marker(VOC_TAR, root).write_text("done\n")
    assert is_in_place("voc", root)
    shutil.rmtree(voc / "Annotations")  # a marker without the data is not enough
    assert not is_in_place("voc", root)
