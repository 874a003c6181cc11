"""One contract, every backend: POSIX, S3 (a real SeaweedFS server) and DAOS (the pydaos double)."""

import hashlib
import io

import pydaos_double
import pytest

from letl.storage.contract import InvalidKeyError
from letl.storage.daos import DaosBackend
from letl.storage.posix import PosixBackend


@pytest.fixture(params=["posix", "s3", "daos"])
def backend(request, tmp_path):
    if request.param == "posix":
        return PosixBackend(tmp_path / "tier")
    if request.param == "s3":
        return request.getfixturevalue("s3_backend")
    pydaos_double.reset()
    pydaos_double.create_container("pool", "cont")
    return DaosBackend("pool", "cont", chunk_size=64 * 1024, pydaos_module=pydaos_double)


class Exploding(io.RawIOBase):
    """A stream that dies after some bytes, like a writer killed mid-put."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            raise ConnectionError("writer died")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


@pytest.mark.parametrize("size", [0, 1, 200 * 1024])
def test_round_trip_reports_size_and_sha256(backend, size):
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    written = backend.put("a/b/v1.parquet", io.BytesIO(data))
    assert written == (size, hashlib.sha256(data).hexdigest())
    assert backend.exists("a/b/v1.parquet")
    with backend.open("a/b/v1.parquet") as f:
        assert f.read() == data


def test_put_file_consumes_the_file(backend, tmp_path):
    path = tmp_path / "staged.parquet"
    path.write_bytes(b"parquet bytes")
    assert backend.put_file("k/v.parquet", path).size == len(b"parquet bytes")
    assert not path.exists()
    with backend.open("k/v.parquet") as f:
        assert f.read() == b"parquet bytes"


def test_versions_are_immutable(backend):
    backend.put("k/v", io.BytesIO(b"first"))
    assert backend.put("k/v", io.BytesIO(b"first")).sha256 == hashlib.sha256(b"first").hexdigest()
    with pytest.raises(FileExistsError):
        backend.put("k/v", io.BytesIO(b"second"))
    with backend.open("k/v") as f:
        assert f.read() == b"first"


def test_missing_keys_raise_file_not_found(backend):
    assert not backend.exists("no/such")
    with pytest.raises(FileNotFoundError):
        backend.open("no/such").read()
    backend.delete("no/such")  # deleting nothing is not an error


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/../b", ".tmp/x", ""])
def test_keys_that_could_escape_are_refused(backend, key):
    with pytest.raises(InvalidKeyError):
        backend.put(key, io.BytesIO(b"x"))


def test_keys_usage_and_delete(backend):
    backend.put("x/1", io.BytesIO(b"aa"))
    backend.put("x/2", io.BytesIO(b"bbb"))
    backend.put("y/1", io.BytesIO(b"c"))
    assert sorted(backend.keys()) == ["x/1", "x/2", "y/1"]
    assert sorted(backend.keys("x/")) == ["x/1", "x/2"]
    assert backend.usage() == 6
    backend.delete("x/1")
    assert sorted(backend.keys()) == ["x/2", "y/1"] and backend.usage() == 4


@pytest.mark.parametrize("size", [10, 300 * 1024])
def test_a_writer_dying_mid_put_leaves_nothing_visible(backend, size):
    with pytest.raises(ConnectionError):
        backend.put("k/torn", io.BufferedReader(Exploding(size)))
    assert not backend.exists("k/torn")
    assert list(backend.keys()) == []
    backend.clean_temp(older_than=0)
    assert list(backend.keys()) == [] and backend.usage() == 0
