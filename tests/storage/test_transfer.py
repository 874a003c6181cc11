"""The overlapped copy (reader, hasher, writer), block digests and ranged reads, with local files."""

import hashlib
import io
import os
import threading

import pytest

from letl.lake import moves as moves_module
from letl.lake.errors import VerificationFailed
from letl.lake.moves import Mover
from letl.storage import transfer
from letl.storage.posix import PosixBackend
from letl.storage.s3_transfer import RangedReader
from letl.storage.transfer import BLOCK, BlockHash, pipe

SIZE = 2 * BLOCK + 12345  # three blocks, the last one short


@pytest.fixture
def data() -> bytes:
    return os.urandom(SIZE)


class Dying(io.RawIOBase):
    """Gives `good` bytes, then fails like a dead producer."""

    def __init__(self, good: bytes):
        self.left = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunk = self.left.read(n)
        if not chunk:
            raise OSError("producer died")
        return chunk


def no_pipe_threads_left() -> bool:
    return not any(t.name in ("letl-read", "letl-sha256") for t in threading.enumerate())


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_pipe_delivers_every_byte_in_order_with_the_sha256(tmp_path, data, kind):
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    received = bytearray()
    with open(path, "rb") if kind == "file" else io.BytesIO(data) as source:  # a memory map, or plain reads
        size, sha256 = pipe(source, received.extend)
    assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert bytes(received) == data
    assert no_pipe_threads_left()


def test_a_failing_source_is_raised_and_nothing_past_it_is_written(data):
    received = bytearray()
    with pytest.raises(OSError, match="producer died"):
        pipe(Dying(data[:BLOCK + 10]), received.extend)
    assert bytes(received) == data[:BLOCK + 10]
    assert no_pipe_threads_left()


def test_a_failing_sink_stops_the_reader_and_the_hasher(data):
    calls = []

    def full_disk(chunk):
        calls.append(len(chunk))
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        pipe(io.BytesIO(data * 4), full_disk, depth=1)
    assert calls == [BLOCK]
    assert no_pipe_threads_left()


def test_block_hash_ignores_how_the_stream_was_cut_and_sees_one_changed_byte(data):
    whole, pieces = BlockHash(), BlockHash()
    whole.update(data)
    for start in range(0, len(data), 3_000_001):
        pieces.update(data[start:start + 3_000_001])
    assert whole.hexdigest() == pieces.hexdigest()
    changed = BlockHash()
    changed.update(data[:-1] + bytes([data[-1] ^ 1]))
    assert changed.hexdigest() != whole.hexdigest()
    shorter = BlockHash()
    shorter.update(data[:-1])
    assert shorter.hexdigest() != whole.hexdigest()


def test_posix_parallel_read_back_equals_the_stream_digest(tmp_path, data):
    backend = PosixBackend(tmp_path / "tier")
    written = backend.put("a/v", io.BytesIO(data))
    assert written == (len(data), hashlib.sha256(data).hexdigest())
    stream = BlockHash()
    stream.update(data)
    assert backend.fast_digest("a/v") == stream.hexdigest()
    backend.put("a/empty", io.BytesIO(b""))
    assert backend.fast_digest("a/empty") == BlockHash().hexdigest()


def test_ranged_reader_refuses_a_short_range_and_keeps_at_most_workers_ahead(data):
    started, done = [], threading.Semaphore(0)

    def fetch(start, end):
        started.append(start)
        done.release()
        return data[start:end]

    with RangedReader(fetch, len(data), data[:BLOCK], workers=1) as reader:
        done.acquire()
        assert started == [BLOCK]  # one worker: one block ahead, no more
        assert reader.read(10) == data[:10] and reader.read() == data[10:]
    torn = RangedReader(lambda start, end: data[start:end - 1], len(data), data[:BLOCK], workers=2)
    torn.read(BLOCK)
    with pytest.raises(OSError, match="expected"):
        torn.read(BLOCK)
    torn.close()


@pytest.fixture
def big_version(lake, tmp_path, data):
    source = tmp_path / "scan.bin"
    source.write_bytes(data)
    result = Mover(lake).write(str(source), "imaging/big", "ssd", "w-big")
    return lake.catalog.get(result.version_id)


def test_a_verified_move_of_several_blocks_keeps_the_sha256(lake, big_version, data):
    assert Mover(lake).move(big_version.version_id, "hdd", "m-big").state == "done"
    moved = lake.catalog.get(big_version.version_id)
    on_hdd = lake.local_path(moved).read_bytes()
    assert on_hdd == data and hashlib.sha256(on_hdd).hexdigest() == big_version.sha256 == moved.sha256
    assert not lake.tiers["ssd"].backend.exists(big_version.storage_key)


def wrong_writes(monkeypatch, damage):
    real = transfer.FileSink.__call__

    def write(self, chunk):
        real(self, damage(bytes(chunk), self.offset))

    monkeypatch.setattr(transfer.FileSink, "__call__", write)


@pytest.mark.parametrize("fault", ["short write", "flipped byte"])
def test_a_torn_or_wrong_copy_is_detected_and_never_switched_to(lake, big_version, data, monkeypatch, fault):
    if fault == "short write":  # the last block loses its tail: the sha256 of what was read still matches
        wrong_writes(monkeypatch, lambda chunk, offset: chunk[:-100] if offset + len(chunk) == SIZE else chunk)
    else:
        wrong_writes(monkeypatch, lambda chunk, offset: chunk[:5] + bytes([chunk[5] ^ 1]) + chunk[6:])
    with pytest.raises(VerificationFailed, match="read-back"):
        Mover(lake).move(big_version.version_id, "hdd", "m-torn")
    after = lake.catalog.get(big_version.version_id)
    assert after.tier == "ssd" and lake.intact(after)
    assert not lake.tiers["hdd"].backend.exists(big_version.storage_key)
    assert Mover(lake).get("m-torn").state == "rolled_back"


def test_a_destination_damaged_before_the_read_back_is_never_switched_to(lake, big_version, monkeypatch):
    def damage(name):
        if name == "before_readback":
            path = lake.tiers["hdd"].backend.local_path(big_version.storage_key)
            with open(path, "r+b") as f:
                f.seek(BLOCK + 7)
                byte = f.read(1)
                f.seek(BLOCK + 7)
                f.write(bytes([byte[0] ^ 0xFF]))

    monkeypatch.setattr(moves_module, "failpoint", damage)
    with pytest.raises(VerificationFailed, match="read-back"):
        Mover(lake).move(big_version.version_id, "hdd", "m-damaged")
    assert lake.catalog.get(big_version.version_id).tier == "ssd"
    assert not lake.tiers["hdd"].backend.exists(big_version.storage_key)



def test_moves_through_a_backend_that_reads_its_input_and_has_no_parallel_read_back(lake, big_version, data,
                                                                                     monkeypatch):
    import pydaos_double

    from letl.storage.daos import DaosBackend

    pydaos_double.reset()
    pydaos_double.create_container("pool", "cont")
    monkeypatch.setattr(lake.tiers["hdd"], "_backend", DaosBackend("pool", "cont", pydaos_module=pydaos_double))
    mover = Mover(lake)
    assert mover.move(big_version.version_id, "hdd", "m-daos").state == "done"
    with lake.tiers["hdd"].backend.open(big_version.storage_key) as f:
        assert f.read() == data
    assert mover.move(big_version.version_id, "ssd", "m-daos-back").state == "done"
    assert lake.local_path(lake.catalog.get(big_version.version_id)).read_bytes() == data
