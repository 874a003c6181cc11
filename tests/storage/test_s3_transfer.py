"""Concurrent multipart uploads and ranged downloads of S3Backend, against the real SeaweedFS server."""

import base64
import hashlib
import io
import os
import threading
import uuid
import zlib

import pytest

from letl.lake.errors import TierUnavailable, VerificationFailed
from letl.lake.lake import Lake
from letl.lake.moves import Mover
from letl.storage.s3 import MiB, S3Backend
from letl.storage.transfer import BLOCK, BlockHash

WAIT = 60  # seconds a worker waits for a sibling before the test gives up: a deadlock guard, not a timing


def backend_with(small: S3Backend, concurrency: int) -> S3Backend:
    # 5 MiB parts (the S3 minimum) from 6 MiB up.
    return S3Backend(small.client, small.bucket, small.prefix, multipart_threshold=6 * MiB, part_size=5 * MiB,
                     max_concurrency=concurrency)


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def open_uploads(backend: S3Backend) -> list[str]:
    uploads = backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.prefix)
    return [u["Key"] for u in uploads.get("Uploads", [])]


class InFlight:
    """Wraps a client call; counts calls running at once."""

    def __init__(self, call):
        self.call, self.lock = call, threading.Lock()
        self.now = self.most = 0
        self.numbers: list[int] = []

    def __call__(self, **kwargs):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.numbers.append(kwargs.get("PartNumber", 0))
        try:
            return self.call(**kwargs)
        finally:
            with self.lock:
                self.now -= 1


def test_parts_go_out_concurrently_and_complete_lists_them_in_order(s3_backend):
    backend = backend_with(s3_backend, 3)
    client = backend.client
    real_upload, real_complete = client.upload_part, client.complete_multipart_upload
    last_done, completed, etags = threading.Event(), [], {}

    def upload_part(**kwargs):
        if kwargs["PartNumber"] == 1:  # finishes only after a later part has: proof of overlap, and out of order
            assert last_done.wait(WAIT), "part 1 was never overlapped by another part"
        answer = real_upload(**kwargs)
        etags[kwargs["PartNumber"]] = answer["ETag"]
        if kwargs["PartNumber"] == 2:
            last_done.set()
        return answer

    def complete(**kwargs):
        completed.append(kwargs["MultipartUpload"]["Parts"])
        return real_complete(**kwargs)

    counter = InFlight(upload_part)
    client.upload_part, client.complete_multipart_upload = counter, complete
    data = os.urandom(27 * MiB)  # six parts: five of 5 MiB and one of 2 MiB
    try:
        assert backend.put("big", io.BytesIO(data)) == (len(data), hashlib.sha256(data).hexdigest())
    finally:
        del client.upload_part, client.complete_multipart_upload
    assert completed == [[{"PartNumber": n, "ETag": etags[n], "ChecksumCRC32": crc32(data[(n - 1) * 5 * MiB:n * 5 * MiB])}
                          for n in range(1, 7)]]
    assert 2 <= counter.most <= 3  # concurrent, and never more than max_concurrency in flight
    with backend.open("big") as f:
        assert f.read() == data
    assert open_uploads(backend) == []


def test_a_failing_part_aborts_the_upload_and_stops_sending(s3_backend):
    backend = backend_with(s3_backend, 2)
    client = backend.client
    real_upload = client.upload_part

    def upload_part(**kwargs):
        if kwargs["PartNumber"] == 2:
            raise ConnectionResetError("connection reset by the server")
        return real_upload(**kwargs)

    counter = InFlight(upload_part)
    client.upload_part = counter
    try:
        with pytest.raises(ConnectionResetError):
            backend.put("broken", io.BytesIO(os.urandom(200 * MiB)))  # 40 parts
    finally:
        del client.upload_part
    assert not backend.exists("broken")
    assert open_uploads(backend) == []  # aborted
    assert len(counter.numbers) < 40  # the failure stopped the producer early


def test_an_unreachable_server_mid_upload_is_tier_unavailable(s3_backend):
    from botocore.exceptions import EndpointConnectionError

    backend = backend_with(s3_backend, 2)

    def refuse(**kwargs):
        raise EndpointConnectionError(endpoint_url=backend.client.meta.endpoint_url)

    backend.client.upload_part = refuse
    try:
        with pytest.raises(TierUnavailable, match="unreachable"):
            backend.put("down", io.BytesIO(os.urandom(12 * MiB)))
    finally:
        del backend.client.upload_part
    assert open_uploads(backend) == []


def test_downloads_fetch_ranges_concurrently_and_deliver_them_in_order(s3_backend):
    backend = backend_with(s3_backend, 4)
    data = os.urandom(5 * BLOCK + 999)
    backend.put("big", io.BytesIO(data))
    client = backend.client
    real_get, second_started = client.get_object, threading.Event()

    def get_object(**kwargs):
        start = int(kwargs["Range"].split("=")[1].split("-")[0])
        if start == 2 * BLOCK:
            second_started.set()
        if start == BLOCK:  # waits for a later range: only concurrent GETs can get past this
            assert second_started.wait(WAIT), "ranges were fetched one at a time"
        return real_get(**kwargs)

    counter = InFlight(get_object)
    client.get_object = counter
    try:
        received = bytearray()
        with backend.open("big") as f:
            while chunk := f.read(3 * MiB + 1):  # reads need not line up with the ranges
                received += chunk
    finally:
        del client.get_object
    assert bytes(received) == data
    assert 2 <= counter.most <= 4
    stream = BlockHash()
    stream.update(data)
    assert backend_with(s3_backend, 4).fast_digest("big") == stream.hexdigest()  # read back: it did not upload it


def test_an_object_replaced_during_a_read_is_refused(s3_backend):
    backend = backend_with(s3_backend, 2)
    backend.put("v", io.BytesIO(os.urandom(3 * BLOCK)))
    name, client = backend.prefix + "v", backend.client
    real_get = client.get_object

    def get_object(**kwargs):
        if "IfMatch" in kwargs and not replaced.is_set():
            replaced.set()
            client.delete_object(Bucket=backend.bucket, Key=name)
            client.put_object(Bucket=backend.bucket, Key=name, Body=os.urandom(3 * BLOCK))
        return real_get(**kwargs)

    replaced = threading.Event()
    client.get_object = get_object
    try:
        with pytest.raises(VerificationFailed, match="replaced while being read"):
            with backend.open("v") as f:
                f.read()
    finally:
        del client.get_object


def test_a_download_move_is_verified_and_keeps_the_sha256(letl_env, objectstore, monkeypatch):
    monkeypatch.setenv("LETL_S3_ENDPOINT", objectstore.endpoint)
    monkeypatch.setenv("LETL_S3_ACCESS_KEY_ID", objectstore.access_key)
    monkeypatch.setenv("LETL_S3_SECRET_ACCESS_KEY", objectstore.secret_key)
    monkeypatch.setenv("LETL_TIER_CORTX_PATH", f"s3://{objectstore.bucket}/{uuid.uuid4().hex[:12]}")
    lake = Lake.from_env()
    source = letl_env["home"].parent / "blob.bin"
    data = os.urandom(3 * BLOCK + 5)
    source.write_bytes(data)
    version = lake.catalog.get(Mover(lake).write(str(source), "imaging/blob", "cortx", "w-1").version_id)
    assert Mover(lake).move(version.version_id, "hdd", "down-1").state == "done"
    moved = lake.catalog.get(version.version_id)
    assert lake.local_path(moved).read_bytes() == data and moved.sha256 == hashlib.sha256(data).hexdigest()
    assert not lake.tiers["cortx"].backend.exists(version.storage_key)
    assert Mover(lake).move(version.version_id, "cortx", "up-1").state == "done"
    with lake.tiers["cortx"].backend.open(version.storage_key) as f:
        assert hashlib.sha256(f.read()).hexdigest() == version.sha256
