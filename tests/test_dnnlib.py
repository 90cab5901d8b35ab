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


def test_easydict_copies_and_pickles():
    import copy
    import pickle
    d = dnnlib.EasyDict(a=dnnlib.EasyDict(b=[1, 2]))
    for clone in (copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
        assert type(clone) is dnnlib.EasyDict and clone.a.b == [1, 2] and clone.a.b is not d.a.b
    with pytest.raises(AttributeError):
        del d.missing


def test_missing_dependency_inside_a_module_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "needs_missing.py").write_text("import histosynth_no_such_dependency\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="histosynth_no_such_dependency"):
        util.get_obj_by_name("needs_missing.X")
    with pytest.raises(util.UserError, match="Cannot find a module"):
        util.get_obj_by_name("histosynth_no_such_package.X")
    with pytest.raises(util.UserError, match="is not callable"):
        util.call_func_by_name(func_name="math.pi")


def test_is_url():
    assert util.is_url("https://example.org/a.pkl") and util.is_url("http://host.example/x")
    assert not util.is_url("https://localhost/x")  # no dot in the host: not treated as a download
    assert not util.is_url("/data/a.pkl") and not util.is_url(None)
    assert not util.is_url("file:///data/a.pkl") and util.is_url("file:///data/a.pkl", allow_file_urls=True)


def test_logger_as_context_hands_streams_back(tmp_path, monkeypatch):
    fake_out, fake_err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", fake_out)
    monkeypatch.setattr(sys, "stderr", fake_err)
    with util.Logger(str(tmp_path / "log.txt"), file_mode="w") as logger:
        assert sys.stdout is logger and sys.stderr is logger
        sys.stderr.write(b"bytes from stderr\n")
        sys.stdout.write("")
    assert sys.stdout is fake_out and sys.stderr is fake_err
    assert (tmp_path / "log.txt").read_text() == "bytes from stderr\n" == fake_out.getvalue()
