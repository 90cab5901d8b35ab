"""dnnlib: EasyDict, construct-by-name, open_url, atomic writes, logging."""

import io
import os
import sys

import pytest

import dnnlib
from dnnlib import util


def test_easydict_attribute_access():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {"a": 1, "b": 2} and d.a == 1
    del d.a
    assert "a" not in d
    with pytest.raises(AttributeError):
        _ = d.missing


def test_construct_and_call_by_name():
    od = util.construct_class_by_name([("x", 1)], class_name="collections.OrderedDict")
    assert list(od.items()) == [("x", 1)]
    assert util.call_func_by_name(3, 4, func_name="math.hypot") == 5.0
    assert util.get_obj_by_name("os.path.join") is os.path.join
    with pytest.raises(util.UserError):
        util.get_obj_by_name("os.path.no_such_function")


def test_format_time():
    assert util.format_time(5) == "5s"
    assert util.format_time(65) == "1m 05s"
    assert util.format_time(3 * 3600 + 7 * 60) == "3h 07m"
    assert util.format_time(86400 + 4 * 3600) == "1d 04h 00m"


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(util.CACHE_DIR_ENV, str(tmp_path))
    assert util.make_cache_dir_path("a", "b") == os.path.join(str(tmp_path), "a", "b")


def test_open_url_local_and_file_url(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"hello")
    with util.open_url(str(p)) as f:
        assert f.read() == b"hello"
    assert util.open_url(p.as_uri(), return_filename=True) == str(p)
    with pytest.raises(util.UserError, match="No such file"):
        util.open_url(str(tmp_path / "missing.pkl"))


def test_open_url_offline_error_names_url(tmp_path):
    url = "http://histosynth-nonexistent-host.invalid/net.pkl"
    with pytest.raises(util.UserError) as info:
        util.open_url(url, cache_dir=str(tmp_path), verbose=False, timeout=5)
    assert url in str(info.value) and "local path" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_open_url_uses_cache(tmp_path):
    url = "https://example.org/weights/model.pt"
    cached = tmp_path / util._url_cache_name(url)
    cached.write_bytes(b"cached bytes")
    assert util.open_url(url, cache_dir=str(tmp_path), return_filename=True) == str(cached)


def test_atomic_write_success_and_failure(tmp_path):
    dst = tmp_path / "out.txt"
    with util.atomic_write(str(dst)) as tmp:
        open(tmp, "w").write("done")
        assert not dst.exists()
    assert dst.read_text() == "done"
    with pytest.raises(RuntimeError):
        with util.atomic_write(str(tmp_path / "bad.txt")) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_sha256_file(tmp_path):
    import hashlib
    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert util.sha256_file(str(p)) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_logger_tees_to_file(tmp_path, monkeypatch):
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stdout", fake)
    log = tmp_path / "log.txt"
    logger = util.Logger(str(log), file_mode="w")
    print("status line")
    logger.close()
    assert sys.stdout is fake
    assert "status line" in fake.getvalue() and "status line" in log.read_text()


def test_atomic_write_output_gets_umask_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with util.atomic_write(str(tmp_path / "out.bin")) as tmp:
            open(tmp, "wb").write(b"x")
    finally:
        os.umask(umask)
    assert (os.stat(tmp_path / "out.bin").st_mode & 0o777) == 0o644
