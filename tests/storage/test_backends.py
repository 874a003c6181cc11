"""PosixBackend: atomic, immutable objects under validated keys."""

import hashlib
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from letl.storage.contract import TMP_DIR, InvalidKeyError, Written
from letl.storage.posix import PosixBackend


@pytest.fixture
def backend(tmp_path: Path) -> PosixBackend:
    return PosixBackend(tmp_path / "tier")


@pytest.fixture
def shm_dir():
    path = Path("/dev/shm") / f"letl-test-{uuid.uuid4().hex}"
    path.mkdir()
    yield path
    for item in path.iterdir():
        item.unlink()
    path.rmdir()


def read_key(backend: PosixBackend, key: str) -> bytes:
    with backend.open(key) as f:
        return f.read()


def test_put_open_round_trip_reports_size_and_sha256(backend):
    data = os.urandom(3 * 1024 * 1024 + 17)
    written = backend.put("main/asset/_/v1.parquet", io.BytesIO(data))
    assert written == Written(len(data), hashlib.sha256(data).hexdigest())
    assert read_key(backend, "main/asset/_/v1.parquet") == data
    assert backend.exists("main/asset/_/v1.parquet")
    assert backend.local_path("main/asset/_/v1.parquet") == backend.root / "main/asset/_/v1.parquet"


def test_put_of_empty_stream(backend):
    written = backend.put("empty.bin", io.BytesIO(b""))
    assert written == Written(0, hashlib.sha256(b"").hexdigest())
    assert read_key(backend, "empty.bin") == b""


def test_put_file_on_same_filesystem_moves_the_file(backend, tmp_path):
    src = tmp_path / "staged.parquet"
    data = b"same filesystem payload" * 1000
    src.write_bytes(data)
    inode = src.stat().st_ino
    written = backend.put_file("a/b.parquet", src)
    assert not src.exists()
    final = backend.root / "a/b.parquet"
    assert final.stat().st_ino == inode  # linked into place, not copied
    assert final.read_bytes() == data
    assert written == Written(len(data), hashlib.sha256(data).hexdigest())


def test_put_file_across_filesystems_copies_and_consumes(disk_dir, shm_dir):
    backend = PosixBackend(disk_dir / "tier")
    src = shm_dir / "staged.parquet"
    data = os.urandom(100_000)
    src.write_bytes(data)
    backend.root.mkdir(parents=True)
    assert src.stat().st_dev != backend.root.stat().st_dev  # the test really crosses filesystems
    written = backend.put_file("a/b.parquet", src)
    assert not src.exists()
    final = backend.root / "a/b.parquet"
    assert final.stat().st_dev == backend.root.stat().st_dev
    assert final.read_bytes() == data
    assert written == Written(len(data), hashlib.sha256(data).hexdigest())
    assert list((backend.root / TMP_DIR).iterdir()) == []


def test_existing_key_with_different_bytes_is_refused(backend, tmp_path):
    backend.put("k/v.parquet", io.BytesIO(b"original"))
    with pytest.raises(FileExistsError):
        backend.put("k/v.parquet", io.BytesIO(b"overwrite attempt"))
    src = tmp_path / "other.parquet"
    src.write_bytes(b"another attempt")
    with pytest.raises(FileExistsError):
        backend.put_file("k/v.parquet", src)
    assert read_key(backend, "k/v.parquet") == b"original"
    assert list(backend.keys()) == ["k/v.parquet"]
    assert list((backend.root / TMP_DIR).iterdir()) == []


def test_existing_key_with_same_bytes_is_accepted(backend, tmp_path):
    first = backend.put("k/v.parquet", io.BytesIO(b"payload"))
    assert backend.put("k/v.parquet", io.BytesIO(b"payload")) == first
    src = tmp_path / "again.parquet"
    src.write_bytes(b"payload")
    assert backend.put_file("k/v.parquet", src) == first
    assert not src.exists()
    assert read_key(backend, "k/v.parquet") == b"payload"
    assert list(backend.keys()) == ["k/v.parquet"]


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", ".tmp/x", "a/../b", "", "a/./b", "a/", ".hidden", "a b"])
def test_invalid_keys_are_rejected(backend, tmp_path, key):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    for call in (
        lambda: backend.put(key, io.BytesIO(b"x")),
        lambda: backend.put_file(key, src),
        lambda: backend.open(key),
        lambda: backend.exists(key),
        lambda: backend.delete(key),
    ):
        with pytest.raises(InvalidKeyError):
            call()
    assert src.exists()
    assert not (tmp_path / "x").exists() and not Path("/abs").exists()
    assert list(backend.keys()) == []


def test_delete_removes_object_and_empty_parents_only(backend):
    backend.put("a/b/c/one.bin", io.BytesIO(b"1"))
    backend.put("a/keep.bin", io.BytesIO(b"2"))
    backend.delete("a/b/c/one.bin")
    assert not backend.exists("a/b/c/one.bin")
    assert not (backend.root / "a/b").exists()
    assert (backend.root / "a").is_dir()
    backend.delete("a/keep.bin")
    assert not (backend.root / "a").exists()
    assert backend.root.is_dir()
    backend.delete("a/never-existed.bin")  # deleting a missing key is not an error
    assert list(backend.keys()) == []


def test_usage_and_keys_ignore_temp_files(backend):
    backend.put("x/one.bin", io.BytesIO(b"a" * 100))
    backend.put("y/two.bin", io.BytesIO(b"b" * 250))
    (backend.root / TMP_DIR / "leftover.part").write_bytes(b"z" * 10_000)
    assert sorted(backend.keys()) == ["x/one.bin", "y/two.bin"]
    assert list(backend.keys("y/")) == ["y/two.bin"]
    assert backend.usage() == 350


def test_keys_and_usage_of_missing_root(tmp_path):
    backend = PosixBackend(tmp_path / "nowhere")
    assert list(backend.keys()) == []
    assert backend.usage() == 0
    assert backend.clean_temp() == 0


def test_clean_temp_removes_leftovers_and_keeps_objects(backend):
    backend.put("x/one.bin", io.BytesIO(b"a"))
    tmp = backend.root / TMP_DIR
    (tmp / "a.part").write_bytes(b"1")
    (tmp / "b.part").write_bytes(b"2")
    (tmp / "dir").mkdir()
    (tmp / "dir" / "c").write_bytes(b"3")
    assert backend.clean_temp() == 3
    assert list(tmp.iterdir()) == []
    assert list(backend.keys()) == ["x/one.bin"]
    assert backend.clean_temp() == 0


SLOW_WRITER = """
import sys, threading, time
from pathlib import Path
from letl.storage.contract import TMP_DIR
from letl.storage.posix import PosixBackend

def announce():
    # put() writes whole blocks from its own pipe, so the part file has bytes some reads later,
    # later still on a busy machine.
    while not any(p.stat().st_size for p in (Path(sys.argv[1]) / TMP_DIR).glob("*.part")):
        time.sleep(0.01)
    print("WRITING", flush=True)

class Slow:
    def read(self, size=-1):
        time.sleep(0.01)
        return b"x" * 65536

threading.Thread(target=announce, daemon=True).start()
PosixBackend(sys.argv[1]).put(sys.argv[2], Slow())
print("FINISHED", flush=True)
"""


def test_put_killed_mid_write_leaves_no_object(backend):
    key = "main/asset/_/v1.parquet"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(backend.root), key], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        parts = list((backend.root / TMP_DIR).glob("*.part"))
        assert len(parts) == 1 and parts[0].stat().st_size > 0
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9
    assert not backend.exists(key)
    assert not (backend.root / key).exists()
    assert list(backend.keys()) == []
    assert backend.usage() == 0
    assert len(list((backend.root / TMP_DIR).glob("*.part"))) == 1
    assert backend.clean_temp() == 1
    assert list((backend.root / TMP_DIR).iterdir()) == []


def test_discard_removes_the_key_at_once_and_frees_the_space_in_the_background(backend):
    import threading

    backend.put("a/b/v.bin", io.BytesIO(b"x" * 100_000))
    backend.put("a/keep.bin", io.BytesIO(b"k"))
    backend.discard("a/b/v.bin")
    assert not backend.exists("a/b/v.bin") and not (backend.root / "a/b").exists()
    assert sorted(backend.keys()) == ["a/keep.bin"] and backend.usage() == 1
    for thread in threading.enumerate():
        if thread.name == "letl-unlink":
            thread.join()
    assert list((backend.root / TMP_DIR).iterdir()) == []
    backend.discard("a/b/v.bin")  # discarding nothing is not an error, as with delete
