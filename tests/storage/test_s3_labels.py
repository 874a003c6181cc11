"""S3 object metadata: every object carries its sha256 and its writer's labels, small or in parts, on
the real SeaweedFS server; a declared sha256 that the bytes do not match stores nothing."""

import hashlib
import io
import os

import pytest

from letl.lake.errors import NotFound, VerificationFailed
from letl.storage.s3 import SHA256_LABEL, MiB, S3Backend
from letl.storage.transfer import reporting

LABELS = {"letl-dataset": "labs/cbc", "letl-branch": "main", "letl-partition": "2024-01-01", "letl-version": "v1"}


def parts_of(small: S3Backend) -> S3Backend:
    """Multipart from 6 MiB up, 5 MiB parts (the S3 minimum)."""
    return S3Backend(small.client, small.bucket, small.prefix, multipart_threshold=6 * MiB, part_size=5 * MiB)


def open_uploads(backend: S3Backend) -> list[str]:
    uploads = backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.prefix)
    return [u["Key"] for u in uploads.get("Uploads", [])]


def test_a_small_object_carries_its_labels_and_the_sha256_it_was_sent_with(s3_backend):
    data = os.urandom(1000)
    s3_backend.put("a/v1.parquet", io.BytesIO(data), LABELS)
    head = s3_backend.client.head_object(Bucket=s3_backend.bucket, Key=s3_backend.prefix + "a/v1.parquet")
    assert head["Metadata"] == {**LABELS, SHA256_LABEL: hashlib.sha256(data).hexdigest()}
    assert s3_backend.labels("a/v1.parquet") == head["Metadata"]
    with pytest.raises(NotFound):
        s3_backend.labels("a/none")


def test_a_file_sent_in_parts_is_hashed_first_so_its_metadata_holds_its_sha256(s3_backend, tmp_path):
    backend = parts_of(s3_backend)
    data = os.urandom(13 * MiB)  # three parts
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    written = backend.put_file("big/v1.bin", path, LABELS)
    assert written.sha256 == hashlib.sha256(data).hexdigest() and not path.exists()
    assert backend.labels("big/v1.bin") == {**LABELS, SHA256_LABEL: written.sha256}
    assert open_uploads(backend) == []


def test_a_stream_in_parts_with_a_declared_sha256_keeps_it(s3_backend):
    backend = parts_of(s3_backend)
    data = os.urandom(11 * MiB)
    declared = {**LABELS, SHA256_LABEL: hashlib.sha256(data).hexdigest()}
    backend.put("moved/v1.bin", io.BytesIO(data), declared)
    assert backend.labels("moved/v1.bin") == declared


@pytest.mark.parametrize("size", [1000, 11 * MiB], ids=["small", "parts"])
def test_bytes_that_do_not_match_the_declared_sha256_store_nothing(s3_backend, size):
    backend = parts_of(s3_backend)
    declared = {**LABELS, SHA256_LABEL: hashlib.sha256(b"what the catalog recorded").hexdigest()}
    with pytest.raises(VerificationFailed, match="do not match the sha256 declared"):
        backend.put("bad/v1.bin", io.BytesIO(os.urandom(size)), declared)
    assert not backend.exists("bad/v1.bin")
    assert open_uploads(backend) == []


def test_replace_overwrites_a_pointer_in_one_put_and_a_version_stays_immutable(s3_backend):
    s3_backend.replace("latest/p.json", b'{"v": 1}', {"letl-version": "v1"})
    s3_backend.replace("latest/p.json", b'{"v": 2}', {"letl-version": "v2"})
    with s3_backend.open("latest/p.json") as f:
        assert f.read() == b'{"v": 2}'
    assert s3_backend.labels("latest/p.json") == {"letl-version": "v2"}
    s3_backend.put("v/1.bin", io.BytesIO(b"first"))
    with pytest.raises(FileExistsError):
        s3_backend.put("v/1.bin", io.BytesIO(b"second"))


def test_a_copy_reports_progress_in_order_up_to_its_size(s3_backend):
    backend = parts_of(s3_backend)
    data = os.urandom(20 * MiB)
    seen = []
    with reporting(lambda done, total: seen.append((done, total)), total=len(data)):
        backend.put("progress/v1.bin", io.BytesIO(data))
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 3  # one per 8 MiB block
