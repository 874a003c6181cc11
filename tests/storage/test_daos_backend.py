"""DaosBackend over the in-repo pydaos double (tests/pydaos_double.py)."""

import hashlib
import io
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pydaos_double as pd_
import pytest

from letl.storage import daos as daos_mod
from letl.storage.contract import InvalidKeyError, Written
from letl.storage.daos import CHUNK_MARK, DaosBackend, DaosStorageError
from letl.storage.transfer import BLOCK

POOL, CONT, NAME = "tank", "letl", "letl"
CS = 1024  # small chunks keep multi-chunk cases fast


@pytest.fixture(autouse=True)
def fresh_double():
    pd_.reset()
    pd_.create_container(POOL, CONT)
    yield
    pd_.reset()


@pytest.fixture
def backend() -> DaosBackend:
    return DaosBackend(POOL, CONT, NAME, chunk_size=CS, pydaos_module=pd_, batch_chunks=2)


def store() -> dict[str, bytes]:
    return pd_.raw(POOL, CONT, NAME)


def chunk_keys() -> list[str]:
    return sorted(k for k in store() if CHUNK_MARK in k)


def read_all(backend: DaosBackend, key: str) -> bytes:
    with backend.open(key) as f:
        return f.read()


def expected(data: bytes) -> Written:
    return Written(len(data), hashlib.sha256(data).hexdigest())


class Flaky(io.RawIOBase):
    """A stream that yields `good` bytes and then raises."""

    def __init__(self, good: bytes):
        self._inner = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._inner.readinto(b)
        if n == 0:
            raise ConnectionError("upstream went away")
        return n


class Trickle(io.RawIOBase):
    """Short reads: at most 100 bytes per call."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._inner.readinto(memoryview(b)[:100])


# --- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 5 * CS + 7, 8 * CS])
def test_round_trip_sizes(backend, size):
    data = os.urandom(size)
    key = f"main/asset/_/v{size}.parquet"
    written = backend.put(key, io.BytesIO(data))
    assert written == expected(data)
    assert read_all(backend, key) == data
    assert backend.exists(key)
    manifest = json.loads(store()[key])
    assert manifest["size"] == size
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["chunks"] == -(-size // CS)
    assert manifest["chunk_size"] == CS
    assert len(chunk_keys()) == manifest["chunks"]
    # every value in the store is non-empty, and no put was ever an implicit delete
    assert all(len(v) > 0 for v in store().values())
    assert not [op for op in pd_.LOG if op[0] == "remove" and op[2] == "empty"]


def test_zero_byte_object_is_a_manifest_without_chunks(backend):
    written = backend.put("e/empty.bin", io.BytesIO(b""))
    assert written == expected(b"")
    assert chunk_keys() == []
    assert json.loads(store()["e/empty.bin"])["chunks"] == 0
    assert backend.exists("e/empty.bin")
    assert read_all(backend, "e/empty.bin") == b""
    assert list(backend.keys()) == ["e/empty.bin"]


def test_last_chunk_is_the_remainder_and_chunks_are_full_size(backend):
    data = os.urandom(3 * CS + 5)
    backend.put("k/r.bin", io.BytesIO(data))
    sizes = [len(store()[k]) for k in chunk_keys()]
    assert sorted(sizes) == [5, CS, CS, CS]


def test_short_reads_from_the_stream_still_fill_chunks(backend):
    data = os.urandom(2 * CS + 3)
    assert backend.put("k/trickle.bin", io.BufferedReader(Trickle(data), buffer_size=64)) == expected(data)
    assert sorted(len(store()[k]) for k in chunk_keys()) == [3, CS, CS]
    assert read_all(backend, "k/trickle.bin") == data


def test_chunks_are_written_in_batches_with_bput(backend, monkeypatch):
    backend.exists("k/batched.bin")  # connect first: DCont.dict() itself calls bput(None)
    calls = []
    real_bput = pd_.DDict.bput

    def spy(self, d):
        calls.append(len(d) if d else 0)
        return real_bput(self, d)

    monkeypatch.setattr(pd_.DDict, "bput", spy)
    backend.put("k/batched.bin", io.BytesIO(os.urandom(5 * CS)))
    assert calls == [2, 2, 1, 1]  # batch_chunks=2: three bputs of chunks, then the manifest


def test_put_file_consumes_the_file(backend, tmp_path):
    src = tmp_path / "staged.parquet"
    data = os.urandom(3 * CS)
    src.write_bytes(data)
    assert backend.put_file("a/b.parquet", src) == expected(data)
    assert not src.exists()
    assert read_all(backend, "a/b.parquet") == data


def test_put_file_keeps_the_file_when_refused(backend, tmp_path):
    backend.put("a/b.parquet", io.BytesIO(b"first"))
    src = tmp_path / "staged.parquet"
    src.write_bytes(b"second")
    with pytest.raises(FileExistsError):
        backend.put_file("a/b.parquet", src)
    assert src.read_bytes() == b"second"


# --- reading ------------------------------------------------------------------------------

def test_open_is_seekable_and_reads_across_chunk_boundaries(backend):
    data = os.urandom(4 * CS + 100)
    backend.put("k/s.bin", io.BytesIO(data))
    with backend.open("k/s.bin") as f:
        assert f.seekable()
        f.seek(CS - 10)
        assert f.read(20) == data[CS - 10:CS + 10]
        f.seek(-50, io.SEEK_END)
        assert f.tell() == len(data) - 50
        assert f.read() == data[-50:]
        f.seek(0)
        assert f.read(3 * CS) == data[:3 * CS]


def test_open_fetches_chunks_lazily(backend):
    data = os.urandom(6 * CS)
    backend.put("k/lazy.bin", io.BytesIO(data))
    pd_.LOG.clear()
    with backend.open("k/lazy.bin") as f:
        assert f.read(10) == data[:10]
        fetched = [op for op in pd_.LOG if op[0] == "get" and CHUNK_MARK in op[1]]
    assert len(fetched) == 1


def test_parquet_reads_through_open(backend):
    table = pa.table({"x": list(range(5000)), "y": [f"r{i}" for i in range(5000)]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    backend.put("main/t/_/v.parquet", io.BytesIO(sink.getvalue()))
    with backend.open("main/t/_/v.parquet") as f:
        assert pq.read_table(f).equals(table)


def test_missing_key_is_file_not_found(backend):
    with pytest.raises(FileNotFoundError):
        backend.open("no/such.parquet")
    assert not backend.exists("no/such.parquet")
    backend.delete("no/such.parquet")  # deleting nothing is fine, like PosixBackend


def test_corrupted_chunk_fails_the_read(backend):
    data = os.urandom(2 * CS)
    backend.put("k/c.bin", io.BytesIO(data))
    first = chunk_keys()[0]
    store()[first] = bytes(b ^ 0xFF for b in store()[first])  # same length, different bytes
    with pytest.raises(DaosStorageError, match="sha256"):
        read_all(backend, "k/c.bin")


def test_truncated_chunk_fails_the_size_check(backend):
    backend.put("k/t.bin", io.BytesIO(os.urandom(2 * CS)))
    first = chunk_keys()[0]
    store()[first] = store()[first][:-1]
    with pytest.raises(DaosStorageError, match="expected"):
        read_all(backend, "k/t.bin")


def test_missing_chunk_fails_the_read(backend):
    backend.put("k/m.bin", io.BytesIO(os.urandom(2 * CS)))
    del store()[chunk_keys()[-1]]
    with pytest.raises(DaosStorageError, match="missing"):
        read_all(backend, "k/m.bin")


# --- immutability -------------------------------------------------------------------------

def test_same_bytes_again_is_accepted_without_rewriting(backend):
    data = os.urandom(3 * CS)
    first = backend.put("k/v.bin", io.BytesIO(data))
    before = dict(store())
    pd_.LOG.clear()
    assert backend.put("k/v.bin", io.BytesIO(data)) == first
    assert store() == before
    assert [op for op in pd_.LOG if op[0] in ("put", "remove")] == []


def test_different_bytes_are_refused_and_the_original_survives(backend):
    data = os.urandom(3 * CS)
    backend.put("k/v.bin", io.BytesIO(data))
    before = dict(store())
    with pytest.raises(FileExistsError):
        backend.put("k/v.bin", io.BytesIO(data[:-1] + b"!"))
    assert store() == before
    assert read_all(backend, "k/v.bin") == data


def test_a_racing_writer_that_commits_first_wins(backend):
    """Another process commits the same key while we upload: we refuse and leave no chunks."""
    other = DaosBackend(POOL, CONT, NAME, chunk_size=CS, pydaos_module=pd_)

    class RaceStream(io.BytesIO):
        fired = False

        def read(self, n=-1):
            if not RaceStream.fired:
                RaceStream.fired = True
                other.put("k/race.bin", io.BytesIO(b"theirs"))
            return super().read(n)

    with pytest.raises(FileExistsError):
        backend.put("k/race.bin", RaceStream(b"ours, longer than theirs"))
    assert read_all(backend, "k/race.bin") == b"theirs"
    assert len(chunk_keys()) == 1  # only the winner's chunk


# --- interrupted writes -------------------------------------------------------------------

def test_stream_failure_mid_put_leaves_nothing(backend):
    with pytest.raises(ConnectionError):
        # more than one of the copy's blocks, so that chunks are stored before the failure
        backend.put("k/broken.bin", io.BufferedReader(Flaky(os.urandom(BLOCK + 5 * CS + 3)), buffer_size=CS))
    assert not backend.exists("k/broken.bin")
    assert chunk_keys() == []
    assert list(backend.keys()) == []
    assert any(op[0] == "put" for op in pd_.LOG)  # chunks had been written, then removed


def test_storage_failure_after_n_puts_leaves_nothing(backend):
    pd_.FAULTS.puts_left = 3
    with pytest.raises(DaosStorageError, match="DER_NOSPACE"):
        backend.put("k/full.bin", io.BytesIO(os.urandom(6 * CS)))
    pd_.FAULTS.puts_left = None
    assert not backend.exists("k/full.bin")
    assert chunk_keys() == []
    assert sum(1 for op in pd_.LOG if op[0] == "put") == 3


def test_manifest_write_failure_leaves_no_object(backend):
    pd_.FAULTS.puts_left = 2  # both chunks land, the manifest does not
    with pytest.raises(DaosStorageError):
        backend.put("k/nomanifest.bin", io.BytesIO(os.urandom(2 * CS)))
    pd_.FAULTS.puts_left = None
    assert not backend.exists("k/nomanifest.bin")
    assert chunk_keys() == []


def test_crash_leaves_orphans_that_clean_temp_removes(backend):
    backend.put("k/keep.bin", io.BytesIO(os.urandom(2 * CS)))
    kept = set(chunk_keys())
    pd_.FAULTS.puts_left = 3
    pd_.FAULTS.fail_removes = True  # the cleanup cannot run either, as if the process died
    with pytest.raises(DaosStorageError):
        backend.put("k/dead.bin", io.BytesIO(os.urandom(5 * CS)))
    pd_.FAULTS.puts_left, pd_.FAULTS.fail_removes = None, False
    orphans = set(chunk_keys()) - kept
    assert len(orphans) == 3
    assert not backend.exists("k/dead.bin")
    assert list(backend.keys()) == ["k/keep.bin"]
    assert backend.clean_temp() == 3
    assert set(chunk_keys()) == kept
    assert backend.clean_temp() == 0
    assert backend.exists("k/keep.bin")
    assert len(read_all(backend, "k/keep.bin")) == 2 * CS


def test_clean_temp_spares_young_uploads(backend, monkeypatch):
    pd_.FAULTS.puts_left, pd_.FAULTS.fail_removes = 1, True
    with pytest.raises(DaosStorageError):
        backend.put("k/young.bin", io.BytesIO(os.urandom(3 * CS)))
    pd_.FAULTS.puts_left, pd_.FAULTS.fail_removes = None, False
    assert len(chunk_keys()) == 1
    assert backend.clean_temp(older_than=3600) == 0
    assert len(chunk_keys()) == 1
    real = daos_mod._now_ns()
    monkeypatch.setattr(daos_mod, "_now_ns", lambda: real + 2 * 3600 * 10**9)
    assert backend.clean_temp(older_than=3600) == 1
    assert chunk_keys() == []


def test_interrupted_delete_leaves_orphans_that_clean_temp_removes(backend):
    backend.put("k/d.bin", io.BytesIO(os.urandom(3 * CS)))
    real_remove = backend._remove

    def remove_manifest_then_die(keys):
        raise KeyboardInterrupt

    backend._remove = remove_manifest_then_die
    with pytest.raises(KeyboardInterrupt):
        backend.delete("k/d.bin")
    backend._remove = real_remove
    assert not backend.exists("k/d.bin")  # the manifest went first
    assert len(chunk_keys()) == 3
    assert backend.clean_temp() == 3
    assert store() == {}


# --- keys, usage, delete ------------------------------------------------------------------

def test_keys_usage_delete(backend):
    sizes = {"main/a/_/v1.parquet": 10, "main/a/_/v2.parquet": 3 * CS, "main/b/_/v1.parquet": 0, "dev/a/_/v1.parquet": 1}
    for key, size in sizes.items():
        backend.put(key, io.BytesIO(os.urandom(size)))
    assert list(backend.keys()) == sorted(sizes)
    assert list(backend.keys("main/a/")) == ["main/a/_/v1.parquet", "main/a/_/v2.parquet"]
    assert backend.usage() == sum(sizes.values())
    backend.delete("main/a/_/v2.parquet")
    assert not backend.exists("main/a/_/v2.parquet")
    assert backend.usage() == 11
    assert not any(k.startswith("main/a/_/v2.parquet") for k in store())
    for key in list(backend.keys()):
        backend.delete(key)
    assert store() == {}
    assert backend.usage() == 0


def test_local_path_is_none(backend):
    backend.put("k/x.bin", io.BytesIO(b"x"))
    assert backend.local_path("k/x.bin") is None


@pytest.mark.parametrize("bad", ["", "../x", "a//b", ".hidden/x", "a/b#chunk/1", "a b"])
def test_invalid_keys_are_refused(backend, bad):
    with pytest.raises(InvalidKeyError):
        backend.put(bad, io.BytesIO(b"x"))
    with pytest.raises(InvalidKeyError):
        backend.open(bad)
    with pytest.raises(InvalidKeyError):
        backend.exists(bad)
    with pytest.raises(InvalidKeyError):
        backend.delete(bad)


def test_damaged_manifest_is_an_error_not_a_missing_object(backend):
    backend.put("k/x.bin", io.BytesIO(b"x"))
    store()["k/x.bin"] = b"{not json"
    with pytest.raises(DaosStorageError, match="damaged manifest"):
        backend.open("k/x.bin")


# --- connection ----------------------------------------------------------------------------

def test_pydaos_is_imported_lazily(monkeypatch):
    monkeypatch.delitem(sys.modules, "pydaos", raising=False)
    lazy = DaosBackend(POOL, CONT, NAME)
    assert "pydaos" not in sys.modules
    monkeypatch.setitem(sys.modules, "pydaos", pd_)
    lazy.put("k/lazy.bin", io.BytesIO(b"payload"))
    assert lazy.pydaos is pd_
    assert pd_.raw(POOL, CONT, NAME)  # it really wrote through the module found at first use


def test_missing_pydaos_fails_at_first_use_not_at_construction(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydaos", None)  # makes `import pydaos` raise ImportError
    lazy = DaosBackend(POOL, CONT, NAME)
    with pytest.raises(ImportError):
        lazy.exists("k/x.bin")


def test_dict_is_created_once_and_reused():
    first = DaosBackend(POOL, CONT, "shared", chunk_size=CS, pydaos_module=pd_)
    first.put("k/x.bin", io.BytesIO(b"x"))
    second = DaosBackend(POOL, CONT, "shared", chunk_size=CS, pydaos_module=pd_)
    assert second.exists("k/x.bin")
    assert read_all(second, "k/x.bin") == b"x"


def test_dict_created_by_another_process_between_get_and_create(monkeypatch):
    real_dict = pd_.DCont.dict

    def racing_dict(self, name, v=None, cid="0"):
        real_dict(self, name)  # the other process wins the creation
        return real_dict(self, name, v, cid)  # ours now fails with DER_EXIST

    monkeypatch.setattr(pd_.DCont, "dict", racing_dict)
    b = DaosBackend(POOL, CONT, "raced", chunk_size=CS, pydaos_module=pd_)
    b.put("k/x.bin", io.BytesIO(b"x"))
    assert b.exists("k/x.bin")


def test_unknown_container_is_a_storage_error():
    b = DaosBackend(POOL, "nope", NAME, pydaos_module=pd_)
    with pytest.raises(DaosStorageError, match="DER_NONEXIST"):
        b.exists("k/x.bin")


def test_reader_uses_the_chunk_size_of_the_manifest(backend):
    data = os.urandom(5 * CS + 1)
    backend.put("k/old.bin", io.BytesIO(data))
    bigger = DaosBackend(POOL, CONT, NAME, chunk_size=4 * CS, pydaos_module=pd_)
    assert read_all(bigger, "k/old.bin") == data


# --- the double's own semantics (as upstream pydaos) --------------------------------------

@pytest.fixture
def dd():
    return pd_.DCont(POOL, CONT).dict("semantics")


def test_double_get_of_missing_key_raises_key_error(dd):
    with pytest.raises(KeyError):
        dd.get("absent")
    with pytest.raises(KeyError):
        dd["absent"]
    assert "absent" not in dd


def test_double_empty_value_deletes_the_key(dd):
    dd.put("k", b"v")
    assert dd.get("k") == b"v"
    dd.put("k", b"")
    assert "k" not in dd
    dd["s"] = "text"
    assert dd["s"] == b"text"  # str values come back as bytes
    dd.bput({"s": ""})
    assert len(dd) == 0
    assert ("remove", "s", "empty") in pd_.LOG


def test_double_none_pop_and_del_delete(dd):
    dd.bput({"a": b"1", "b": b"2", "c": b"3"})
    dd.put("a", None)
    assert dd.pop("b") is None
    del dd["c"]
    assert len(dd) == 0
    assert not dd


def test_double_bulk_get_and_put(dd):
    dd.bput({"a": b"1", "b": b"2"})
    got = dd.bget({"a": None, "b": None, "zz": b"stale"})
    assert got == {"a": b"1", "b": b"2", "zz": None}
    assert dd.bget(None) is None
    assert dd.dump() == {"a": b"1", "b": b"2"}
    assert dd == {"a": b"1", "b": b"2"}
    assert sorted(dd) == ["a", "b"]
    assert len(dd) == 2


def test_double_values_must_be_bytes_or_str(dd):
    for bad in (bytearray(b"x"), memoryview(b"x"), 5):
        with pytest.raises(TypeError):
            dd.put("k", bad)
    with pytest.raises(TypeError):
        dd.bput([("k", b"v")])
    with pytest.raises(TypeError):
        dd.bget(["k"])
    assert "k" not in dd


def test_double_container_and_dict_lookup_errors():
    with pytest.raises(pd_.PyDError, match="DER_INVAL"):
        pd_.DCont(POOL)
    with pytest.raises(pd_.PyDError, match="DER_NONEXIST"):
        pd_.DCont(POOL, "never-created")
    cont = pd_.DCont(POOL, CONT)
    with pytest.raises(pd_.DObjNotFound):
        cont.get("nothing")
    cont.dict("once", {"k": b"v"})
    with pytest.raises(pd_.PyDError, match="DER_EXIST"):
        cont.dict("once")
    assert cont["once"].get("k") == b"v"
    assert str(cont) == f"{POOL}/{CONT}" and repr(cont) == f"daos://{POOL}/{CONT}"


def test_double_injected_put_failure_keeps_earlier_entries(dd):
    pd_.FAULTS.puts_left = 1
    with pytest.raises(pd_.PyDError, match="DER_NOSPACE"):
        dd.bput({"first": b"1", "second": b"2"})
    pd_.FAULTS.puts_left = None
    assert dd.dump() == {"first": b"1"}
