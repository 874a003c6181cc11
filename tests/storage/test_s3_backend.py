"""S3Backend against a real SeaweedFS server (the session `objectstore` fixture)."""

import hashlib
import io
import os
import socket

import pytest

from letl.devstore.server import client_for
from letl.storage.contract import InvalidKeyError, Written
from letl.storage.s3 import MiB, S3Backend, S3ProbeError, make_s3_client


def written_of(data: bytes) -> Written:
    return Written(len(data), hashlib.sha256(data).hexdigest())


def multipart_backend(small: S3Backend) -> S3Backend:
    # 5 MiB parts (the S3 minimum) from 6 MiB up: a 12 MiB object takes 3 parts.
    return S3Backend(small.client, small.bucket, small.prefix, multipart_threshold=6 * MiB, part_size=5 * MiB)


def open_uploads(backend: S3Backend) -> list[str]:
    uploads = backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.prefix)
    return [u["Key"] for u in uploads.get("Uploads", [])]


class FailingStream(io.RawIOBase):
    """Yields `good` bytes, then fails like a broken pipe or a killed producer."""

    def __init__(self, good: int):
        self.left = good

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            raise OSError("producer died")
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return b"x" * n


def test_round_trip(s3_backend: S3Backend):
    data = os.urandom(300_000)
    assert s3_backend.put("ds/v1/part-0.parquet", io.BytesIO(data)) == written_of(data)
    with s3_backend.open("ds/v1/part-0.parquet") as f:
        assert f.read() == data
    assert s3_backend.exists("ds/v1/part-0.parquet")
    assert s3_backend.local_path("ds/v1/part-0.parquet") is None
    # The object name is prefix + key.
    head = s3_backend.client.head_object(Bucket=s3_backend.bucket, Key=s3_backend.prefix + "ds/v1/part-0.parquet")
    assert head["ContentLength"] == len(data)


def test_empty_object(s3_backend: S3Backend):
    assert s3_backend.put("empty", io.BytesIO(b"")) == written_of(b"")
    assert s3_backend.open("empty").read() == b""


def test_multipart_round_trip(s3_backend: S3Backend):
    backend = multipart_backend(s3_backend)
    data = os.urandom(12 * MiB)
    assert backend.put("big", io.BytesIO(data)) == written_of(data)
    assert backend.open("big").read() == data
    etag = backend.client.head_object(Bucket=backend.bucket, Key=backend.prefix + "big")["ETag"]
    assert etag.strip('"').endswith("-3"), etag  # really stored as 3 parts
    assert open_uploads(backend) == []


def test_put_file_consumes_the_file(s3_backend: S3Backend, tmp_path):
    data = os.urandom(10_000)
    path = tmp_path / "staged.parquet"
    path.write_bytes(data)
    assert s3_backend.put_file("f", path) == written_of(data)
    assert not path.exists()
    assert s3_backend.open("f").read() == data


def test_failed_small_upload_leaves_nothing(s3_backend: S3Backend):
    with pytest.raises(OSError, match="producer died"):
        s3_backend.put("broken", FailingStream(100_000))
    assert not s3_backend.exists("broken")
    assert open_uploads(s3_backend) == []


def test_failed_multipart_upload_leaves_nothing(s3_backend: S3Backend):
    backend = multipart_backend(s3_backend)
    uploaded = []
    real_upload_part = backend.client.upload_part

    def counting_upload_part(**kwargs):
        uploaded.append(kwargs["PartNumber"])
        return real_upload_part(**kwargs)

    backend.client.upload_part = counting_upload_part
    with pytest.raises(OSError, match="producer died"):
        backend.put("broken", FailingStream(11 * MiB))
    assert sorted(uploaded) == [1, 2]  # parts were on the server before the failure...
    assert not backend.exists("broken")  # ...yet no object appeared
    assert open_uploads(backend) == []  # and the upload was aborted


def test_different_bytes_never_overwrite(s3_backend: S3Backend):
    s3_backend.put("v", io.BytesIO(b"original"))
    with pytest.raises(FileExistsError, match="different data"):
        s3_backend.put("v", io.BytesIO(b"changed!"))
    assert s3_backend.open("v").read() == b"original"
    # Same bytes again: accepted, as with PosixBackend.
    assert s3_backend.put("v", io.BytesIO(b"original")) == written_of(b"original")


def test_multipart_never_overwrites(s3_backend: S3Backend):
    backend = multipart_backend(s3_backend)
    first = os.urandom(7 * MiB)
    backend.put("big", io.BytesIO(first))
    with pytest.raises(FileExistsError):
        backend.put("big", io.BytesIO(os.urandom(7 * MiB)))
    assert backend.put("big", io.BytesIO(first)) == written_of(first)
    assert backend.open("big").read() == first
    assert open_uploads(backend) == []


def test_if_none_match_on_complete_protects_the_key(s3_backend: S3Backend, monkeypatch):
    # Skip the existence check before completing: the server's If-None-Match must refuse.
    backend = multipart_backend(s3_backend)
    first = os.urandom(7 * MiB)
    backend.put("big", io.BytesIO(first))
    monkeypatch.setattr(backend, "_exists_name", lambda name: False)
    with pytest.raises(FileExistsError):
        backend.put("big", io.BytesIO(os.urandom(7 * MiB)))
    assert backend.open("big").read() == first
    assert open_uploads(backend) == []


def test_missing_key(s3_backend: S3Backend):
    with pytest.raises(FileNotFoundError, match="missing"):
        s3_backend.open("missing")
    assert not s3_backend.exists("missing")
    s3_backend.delete("missing")  # idempotent


def test_invalid_keys_are_refused(s3_backend: S3Backend):
    for key in ("../escape", "a//b", ".hidden", ""):
        with pytest.raises(InvalidKeyError):
            s3_backend.put(key, io.BytesIO(b"x"))


def test_keys_usage_delete(s3_backend: S3Backend, objectstore):
    other = S3Backend(client_for(objectstore), objectstore.bucket, s3_backend.prefix.rstrip("/") + "-other")
    other.put("a/1", io.BytesIO(b"not mine"))  # same leading characters, other prefix
    for key, body in (("a/1", b"1"), ("a/2", b"22"), ("b/3", b"333")):
        s3_backend.put(key, io.BytesIO(body))
    assert sorted(s3_backend.keys()) == ["a/1", "a/2", "b/3"]
    assert sorted(s3_backend.keys("a/")) == ["a/1", "a/2"]
    assert s3_backend.usage() == 6
    s3_backend.delete("a/1")
    s3_backend.delete("a/1")
    assert sorted(s3_backend.keys()) == ["a/2", "b/3"]
    assert s3_backend.usage() == 5
    assert list(other.keys()) == ["a/1"]


def test_clean_temp_aborts_dangling_uploads(s3_backend: S3Backend, objectstore):
    client = s3_backend.client
    mine = client.create_multipart_upload(Bucket=s3_backend.bucket, Key=s3_backend.prefix + "dangling")
    client.upload_part(Bucket=s3_backend.bucket, Key=s3_backend.prefix + "dangling",
                       UploadId=mine["UploadId"], PartNumber=1, Body=b"x" * 1000)
    other = S3Backend(client_for(objectstore), objectstore.bucket, s3_backend.prefix.rstrip("/") + "-other")
    theirs = client.create_multipart_upload(Bucket=other.bucket, Key=other.prefix + "dangling")
    assert open_uploads(s3_backend) == [s3_backend.prefix + "dangling"]
    assert s3_backend.clean_temp() == 1
    assert open_uploads(s3_backend) == []
    assert s3_backend.clean_temp() == 0
    assert open_uploads(other) == [other.prefix + "dangling"]  # outside the prefix: untouched
    client.abort_multipart_upload(Bucket=other.bucket, Key=other.prefix + "dangling", UploadId=theirs["UploadId"])


def test_clean_temp_spares_young_uploads(s3_backend: S3Backend):
    # A writer may still be uploading parts: a grace period keeps its upload alive.
    key = s3_backend.prefix + "in-flight"
    s3_backend.client.create_multipart_upload(Bucket=s3_backend.bucket, Key=key)
    assert s3_backend.clean_temp(older_than=3600) == 0
    assert open_uploads(s3_backend) == [key]
    assert s3_backend.clean_temp(older_than=0) == 1
    assert open_uploads(s3_backend) == []


def test_probe_ok(s3_backend: S3Backend):
    s3_backend.probe()
    assert s3_backend.ensure_bucket() is False


@pytest.mark.parametrize("access,secret", [("right", "wrong"), ("NOSUCHKEY", "wrong")])
def test_probe_wrong_credentials(objectstore, access, secret):
    client = make_s3_client(objectstore.endpoint, objectstore.access_key if access == "right" else access, secret)
    with pytest.raises(S3ProbeError, match="credentials") as err:
        S3Backend(client, objectstore.bucket).probe()
    assert err.value.reason == "credentials"
    assert objectstore.endpoint in str(err.value) and "'letl'" in str(err.value)


def test_probe_unreachable_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        client = make_s3_client(f"http://127.0.0.1:{port}", "a", "b", max_attempts=1)
        with pytest.raises(S3ProbeError, match="unreachable") as err:
            S3Backend(client, "letl").probe()
    assert err.value.reason == "unreachable"
    assert f"127.0.0.1:{port}" in str(err.value)


def test_missing_bucket_and_ensure_bucket(objectstore):
    backend = S3Backend(client_for(objectstore), "letl-probe-test")
    with pytest.raises(S3ProbeError, match="bucket does not exist") as err:
        backend.probe()
    assert err.value.reason == "no_bucket"
    assert backend.ensure_bucket() is True
    backend.probe()
    assert backend.ensure_bucket() is False
    backend.client.delete_bucket(Bucket="letl-probe-test")


def test_small_part_size_is_refused(objectstore):
    with pytest.raises(ValueError, match="part_size"):
        S3Backend(client_for(objectstore), objectstore.bucket, part_size=MiB)
