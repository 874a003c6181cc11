"""One contract, every backend: POSIX, S3 (a real SeaweedFS server) and DAOS (the pydaos double).

Each test here runs on all three; what only one backend does is tested in its own module.
"""

import hashlib
import inspect
import io
import socket

import pydaos_double
import pytest

from letl.lake.errors import NotFound, TierUnavailable
from letl.storage.contract import Backend, InvalidKeyError
from letl.storage.daos import DaosBackend
from letl.storage.posix import PosixBackend
from letl.storage.s3 import S3Backend, make_s3_client
from letl.storage.transfer import BlockHash, stored_digest

DAOS_CHUNK = 64 * 1024
KINDS = ["posix", "s3", "daos"]
CLASSES = {"posix": PosixBackend, "s3": S3Backend, "daos": DaosBackend}
PROTOCOL = sorted(name for name, member in vars(Backend).items() if callable(member) and not name.startswith("_"))


@pytest.fixture
def daos_double():
    pydaos_double.reset()
    pydaos_double.create_container("pool", "cont")
    yield pydaos_double
    pydaos_double.reset()


@pytest.fixture(params=KINDS)
def backend(request, tmp_path):
    if request.param == "posix":
        return PosixBackend(tmp_path / "tier")
    if request.param == "s3":
        return request.getfixturevalue("s3_backend")
    double = request.getfixturevalue("daos_double")
    return DaosBackend("pool", "cont", chunk_size=DAOS_CHUNK, pydaos_module=double)


def data_of(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


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


# -- the Protocol is the whole contract ----------------------------------------------------

def test_the_protocol_lists_what_callers_use():
    assert PROTOCOL == sorted(["put", "put_file", "open", "read_range", "local_path", "exists", "delete", "discard",
                               "usage", "keys", "clean_temp", "probe", "fast_digest"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", PROTOCOL)
def test_every_backend_class_has_every_protocol_method(kind, method):
    implementation = getattr(CLASSES[kind], method, None)
    assert callable(implementation), f"{CLASSES[kind].__name__} lacks {method}"
    wanted = list(inspect.signature(getattr(Backend, method)).parameters)
    assert list(inspect.signature(implementation).parameters) == wanted


# -- writing and reading -------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 200 * 1024])
def test_round_trip_reports_size_and_sha256(backend, size):
    data = data_of(size)
    written = backend.put("a/b/v1.parquet", io.BytesIO(data))
    assert written == (size, hashlib.sha256(data).hexdigest())
    assert backend.exists("a/b/v1.parquet")
    with backend.open("a/b/v1.parquet") as f:
        assert f.read() == data
    path = backend.local_path("a/b/v1.parquet")
    assert path is None or path.read_bytes() == data


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


SIZE = 3 * DAOS_CHUNK + 100  # three whole DAOS chunks and a short last one
RANGES = {
    "at the start": (0, 10),
    "at the end": (SIZE - 10, SIZE),
    "the whole object": (0, SIZE),
    "across one chunk boundary": (DAOS_CHUNK - 5, DAOS_CHUNK + 5),
    "across two chunk boundaries": (DAOS_CHUNK - 1, 2 * DAOS_CHUNK + 1),
    "exactly one chunk": (DAOS_CHUNK, 2 * DAOS_CHUNK),
    "into the short last chunk": (3 * DAOS_CHUNK - 3, 3 * DAOS_CHUNK + 3),
    "running past the end": (SIZE - 3, SIZE + 100),
    "empty": (5, 5),
    "reversed": (10, 5),
    "starting at the end": (SIZE, SIZE + 10),
    "starting past the end": (SIZE + 5, SIZE + 10),
}


@pytest.mark.parametrize("span", RANGES.values(), ids=RANGES.keys())
def test_read_range(backend, span):
    data = data_of(SIZE)
    backend.put("a/ranged.bin", io.BytesIO(data))
    start, end = span
    assert backend.read_range("a/ranged.bin", start, end) == data[start:end]


def test_read_range_of_an_empty_object(backend):
    backend.put("a/empty.bin", io.BytesIO(b""))
    assert backend.read_range("a/empty.bin", 0, 10) == b""


def test_digests_match_what_was_written(backend):
    data = data_of(SIZE)
    backend.put("a/v.bin", io.BytesIO(data))
    expected = BlockHash()
    expected.update(data)
    fast = backend.fast_digest("a/v.bin")
    assert fast is None or fast == expected.hexdigest()
    assert stored_digest(backend, "a/v.bin") == expected.hexdigest()


# -- missing keys and refused keys ---------------------------------------------------------

def test_missing_keys_are_not_found(backend):
    assert not backend.exists("no/such")
    with pytest.raises(NotFound):
        backend.open("no/such").read()
    with pytest.raises(NotFound):
        backend.read_range("no/such", 0, 4)
    with pytest.raises(FileNotFoundError):  # NotFound is the builtin too, for callers that catch it
        backend.open("no/such").read()
    backend.delete("no/such")  # deleting nothing is not an error
    backend.discard("no/such")
    assert list(backend.keys()) == []


def test_fast_digest_of_a_missing_key(backend):
    if isinstance(backend, DaosBackend):
        assert backend.fast_digest("no/such") is None  # no fast path: stored_digest's open() says NotFound
        with pytest.raises(NotFound):
            stored_digest(backend, "no/such")
        return
    with pytest.raises(NotFound):
        backend.fast_digest("no/such")


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/../b", ".tmp/x", "", "a/b#chunk/1"])
def test_keys_that_could_escape_are_refused(backend, key):
    with pytest.raises(InvalidKeyError):
        backend.put(key, io.BytesIO(b"x"))
    with pytest.raises(InvalidKeyError):
        backend.exists(key)


# -- listing, usage, deletes ---------------------------------------------------------------

def test_keys_usage_and_delete(backend):
    backend.put("x/1", io.BytesIO(b"aa"))
    backend.put("x/2", io.BytesIO(b"bbb"))
    backend.put("y/1", io.BytesIO(b"c"))
    assert sorted(backend.keys()) == ["x/1", "x/2", "y/1"]
    assert backend.usage() == 6
    backend.delete("x/1")
    assert sorted(backend.keys()) == ["x/2", "y/1"] and backend.usage() == 4
    backend.discard("x/2")
    assert not backend.exists("x/2")
    assert sorted(backend.keys()) == ["y/1"] and backend.usage() == 1


def test_keys_with_prefixes(backend):
    for key in ["a/b/1", "a/b/2", "a/bc/1", "a/c/1", "ab/1"]:
        backend.put(key, io.BytesIO(key.encode()))
    assert sorted(backend.keys("a/b/")) == ["a/b/1", "a/b/2"]
    assert sorted(backend.keys("a/b")) == ["a/b/1", "a/b/2", "a/bc/1"]  # a string prefix, not a folder
    assert sorted(backend.keys("a/")) == ["a/b/1", "a/b/2", "a/bc/1", "a/c/1"]
    assert sorted(backend.keys("a")) == ["a/b/1", "a/b/2", "a/bc/1", "a/c/1", "ab/1"]
    assert sorted(backend.keys("a/b/2")) == ["a/b/2"]
    assert list(backend.keys("z")) == []


# -- interrupted writes and their leftovers ------------------------------------------------

@pytest.mark.parametrize("size", [10, 300 * 1024])
def test_a_writer_dying_mid_put_leaves_nothing_visible(backend, size):
    with pytest.raises(ConnectionError):
        backend.put("k/torn", io.BufferedReader(Exploding(size)))
    assert not backend.exists("k/torn")
    assert list(backend.keys()) == []
    backend.clean_temp(older_than=0)
    assert list(backend.keys()) == [] and backend.usage() == 0


def leave_leftover(backend) -> None:
    """What a writer that died without cleaning up leaves behind, on each backend."""
    if isinstance(backend, PosixBackend):
        tmp = backend.root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "elsewhere-1-dead.part").write_bytes(b"half")  # another host's: judged by age alone
    elif isinstance(backend, S3Backend):
        backend.client.create_multipart_upload(Bucket=backend.bucket, Key=backend.prefix + "k/left")
    else:
        pydaos_double.FAULTS.puts_left, pydaos_double.FAULTS.fail_removes = 1, True  # died: no cleanup ran
        with pytest.raises(OSError):
            backend.put("k/left", io.BytesIO(data_of(3 * DAOS_CHUNK)))
        pydaos_double.FAULTS.puts_left, pydaos_double.FAULTS.fail_removes = None, False


def test_clean_temp_removes_old_leftovers_spares_young_ones_and_never_objects(backend):
    backend.put("k/keep", io.BytesIO(b"kept"))
    assert backend.clean_temp(older_than=0) == 0
    leave_leftover(backend)
    assert not backend.exists("k/left") and list(backend.keys()) == ["k/keep"]
    assert backend.clean_temp(older_than=3600) == 0  # could be a live writer's
    assert backend.clean_temp(older_than=0) >= 1
    assert backend.clean_temp(older_than=0) == 0
    assert list(backend.keys()) == ["k/keep"] and backend.usage() == 4
    with backend.open("k/keep") as f:
        assert f.read() == b"kept"


# -- probe ---------------------------------------------------------------------------------

def test_probe_of_a_reachable_store_returns(backend):
    assert backend.probe() is None
    backend.put("k/v", io.BytesIO(b"x"))
    assert backend.probe() is None


@pytest.fixture(params=KINDS)
def unreachable(request, tmp_path):
    if request.param == "posix":
        (tmp_path / "a-file").write_bytes(b"not a directory")
        return PosixBackend(tmp_path / "a-file" / "tier")
    if request.param == "s3":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        return S3Backend(make_s3_client(f"http://127.0.0.1:{closed}", "k", "s", max_attempts=1), "letl")
    double = request.getfixturevalue("daos_double")
    return DaosBackend("pool", "never-created", pydaos_module=double)


def test_probe_of_an_unusable_store_is_tier_unavailable(unreachable):
    with pytest.raises(TierUnavailable):
        unreachable.probe()


def test_probe_of_a_posix_root_not_yet_created_returns(tmp_path):
    assert PosixBackend(tmp_path / "later" / "tier").probe() is None
    assert not (tmp_path / "later").exists()  # a probe creates nothing

