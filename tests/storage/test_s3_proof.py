"""Uploads proven by the server's checksums instead of a read-back, against the real SeaweedFS server."""

import base64
import hashlib
import io
import os
import uuid
import zlib

import pytest
from botocore.exceptions import ClientError

from letl.lake.lake import Lake
from letl.lake.moves import Mover
from letl.storage.contract import Written
from letl.storage.s3 import MiB, S3Backend
from letl.storage.s3_transfer import Upload
from letl.storage.transfer import BlockHash, stored_digest

PART = 5 * MiB


def multipart(small: S3Backend) -> S3Backend:
    """5 MiB parts (the S3 minimum) from 6 MiB up."""
    return S3Backend(small.client, small.bucket, small.prefix, multipart_threshold=6 * MiB, part_size=PART)


def sent_digest(data: bytes) -> str:
    digest = BlockHash()
    digest.update(data)
    return digest.hexdigest()


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


class Counting:
    """Wraps a client call and counts it."""

    def __init__(self, call):
        self.call, self.calls = call, 0

    def __call__(self, **kwargs):
        self.calls += 1
        return self.call(**kwargs)


def gets_during(backend: S3Backend, work) -> tuple[object, int]:
    counter = Counting(backend.client.get_object)
    backend.client.get_object = counter
    try:
        return work(), counter.calls
    finally:
        del backend.client.get_object


def open_uploads(backend: S3Backend) -> list[str]:
    uploads = backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.prefix)
    return [u["Key"] for u in uploads.get("Uploads", [])]


def test_seaweedfs_refuses_a_part_or_an_object_whose_crc32_does_not_match(s3_backend):
    client, bucket, name = s3_backend.client, s3_backend.bucket, s3_backend.prefix + "raw"
    body = os.urandom(PART)
    with pytest.raises(ClientError, match="BadDigest"):
        client.put_object(Bucket=bucket, Key=name, Body=body, ChecksumCRC32=crc32(body + b"!"))
    upload = client.create_multipart_upload(Bucket=bucket, Key=name, ChecksumAlgorithm="CRC32")["UploadId"]
    try:
        with pytest.raises(ClientError, match="BadDigest"):
            client.upload_part(Bucket=bucket, Key=name, UploadId=upload, PartNumber=1, Body=body,
                               ChecksumCRC32=crc32(body[:-1] + b"!"))
        parts = client.list_parts(Bucket=bucket, Key=name, UploadId=upload).get("Parts", [])
        assert parts == []  # nothing of the refused part was kept
    finally:
        client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload)
    assert not s3_backend.exists("raw")


def test_a_part_damaged_on_the_way_fails_the_put_and_stores_nothing(s3_backend):
    backend = multipart(s3_backend)
    real_upload = backend.client.upload_part

    def damage_part_two(**kwargs):
        if kwargs["PartNumber"] == 2:  # one bit flipped after the checksum was computed, as a bad link would
            body = bytearray(kwargs["Body"])
            body[len(body) // 2] ^= 1
            kwargs["Body"] = bytes(body)
        return real_upload(**kwargs)

    backend.client.upload_part = damage_part_two
    try:
        with pytest.raises(ClientError, match="BadDigest"):
            backend.put("damaged", io.BytesIO(os.urandom(3 * PART)))
    finally:
        del backend.client.upload_part
    assert not backend.exists("damaged")
    assert open_uploads(backend) == []


@pytest.mark.parametrize("size", [0, 1000, 3 * PART + 7], ids=["empty", "single-put", "multipart"])
def test_an_upload_is_proven_by_its_head_and_never_read_back(s3_backend, size):
    backend, data = multipart(s3_backend), os.urandom(size)
    backend.put("v", io.BytesIO(data))
    digest, gets = gets_during(backend, lambda: backend.fast_digest("v"))
    assert (digest, gets) == (sent_digest(data), 0)
    fresh = multipart(s3_backend)  # no memory of the upload: it must read the object back
    digest, gets = gets_during(fresh, lambda: fresh.fast_digest("v"))
    assert digest == sent_digest(data) and gets == -(-size // (8 * MiB))


@pytest.mark.parametrize("size", [1000, 3 * PART + 7], ids=["single-put", "multipart"])
def test_with_checksums_off_no_checksum_is_sent_and_every_upload_is_read_back(s3_backend, monkeypatch, size):
    monkeypatch.setenv("LETL_S3_CHECKSUMS", "off")  # for a server that refuses additional checksums
    backend, data = multipart(s3_backend), os.urandom(size)
    sent_headers = []
    backend.client.meta.events.register("before-send.s3.*", lambda request, **_: sent_headers.append(dict(request.headers)))
    backend.put("v", io.BytesIO(data))
    assert sent_headers and not any(k.lower().startswith("x-amz-checksum") or k.lower() == "x-amz-sdk-checksum-algorithm"
                                    for h in sent_headers for k in h)
    digest, gets = gets_during(backend, lambda: backend.fast_digest("v"))
    assert digest == sent_digest(data) and gets == -(-size // (8 * MiB))


def test_an_object_replaced_after_its_upload_is_read_back_not_trusted(s3_backend):
    backend, data = multipart(s3_backend), os.urandom(2 * PART)
    backend.put("v", io.BytesIO(data))
    other = bytes(reversed(data))  # same size, other bytes, stored without a checksum
    backend.client.put_object(Bucket=backend.bucket, Key=backend.prefix + "v", Body=other)
    digest, gets = gets_during(backend, lambda: backend.fast_digest("v"))
    assert digest == sent_digest(other) != sent_digest(data) and gets > 0


@pytest.mark.parametrize("size", [1000, 7 * MiB], ids=["single put", "multipart"])
def test_bytes_changed_between_their_arrival_and_their_sending_are_proven_as_sent(s3_backend, size):
    """A chunk may be a view of a memory-mapped source file, which an outside writer can change in
    place after the upload took the view and before it sent those bytes: the proof must be of what
    was sent, so that a move's comparison with its copy's stream hash sees the change."""
    backend = multipart(s3_backend)
    original = os.urandom(size)
    mapped = bytearray(original)
    upload = Upload(backend, backend._name("changed.bin"))
    upload.write(memoryview(mapped))  # the tail stays held: sent by finish (a single put, or the last part)
    mapped[-1] ^= 0xFF
    upload.finish(Written(size, hashlib.sha256(original).hexdigest()))
    sent = original[:-1] + bytes([original[-1] ^ 0xFF])
    proof = stored_digest(backend, "changed.bin")
    assert proof == sent_digest(sent) != sent_digest(original)
    fresh = S3Backend(backend.client, backend.bucket, backend.prefix)  # no proof: reads the object back
    assert stored_digest(fresh, "changed.bin") == proof


def test_a_server_that_reports_no_checksum_gets_its_uploads_read_back(s3_backend):
    backend, data = multipart(s3_backend), os.urandom(2 * PART)
    real_complete = backend.client.complete_multipart_upload

    def complete_without_checksum(**kwargs):
        answer = real_complete(**kwargs)
        answer.pop("ChecksumCRC32", None)
        return answer

    backend.client.complete_multipart_upload = complete_without_checksum
    try:
        backend.put("v", io.BytesIO(data))
    finally:
        del backend.client.complete_multipart_upload
    digest, gets = gets_during(backend, lambda: backend.fast_digest("v"))
    assert digest == sent_digest(data) and gets > 0


def test_a_move_to_the_object_tier_reads_nothing_back_and_keeps_the_sha256(letl_env, objectstore, monkeypatch):
    monkeypatch.setenv("LETL_S3_ENDPOINT", objectstore.endpoint)
    monkeypatch.setenv("LETL_S3_ACCESS_KEY_ID", objectstore.access_key)
    monkeypatch.setenv("LETL_S3_SECRET_ACCESS_KEY", objectstore.secret_key)
    monkeypatch.setenv("LETL_TIER_CORTX_PATH", f"s3://{objectstore.bucket}/{uuid.uuid4().hex[:12]}")
    lake = Lake.from_env()
    source = letl_env["home"].parent / "blob.bin"
    data = os.urandom(70 * MiB)  # past the 64 MiB multipart threshold
    source.write_bytes(data)
    version = lake.catalog.get(Mover(lake).write(str(source), "imaging/blob", "hdd", "w-1").version_id)
    cortx = lake.tiers["cortx"].backend
    result, gets = gets_during(cortx, lambda: Mover(lake).move(version.version_id, "cortx", "up-1"))
    assert result.state == "done" and gets == 0
    moved = lake.catalog.get(version.version_id)
    assert moved.tier == "cortx" and moved.sha256 == hashlib.sha256(data).hexdigest()
    with cortx.open(version.storage_key) as f:
        assert hashlib.sha256(f.read()).hexdigest() == moved.sha256
