"""An S3 bucket as a storage tier: the same contract as ``PosixBackend``.

Atomicity comes from S3 itself: a single ``put_object`` and a completed multipart
upload both appear whole or not at all. Immutability comes from ``If-None-Match: *``
on the put and on ``complete_multipart_upload`` (SeaweedFS 4.48 honours both and
answers 412), plus an existence check before completing a multipart upload for
servers that ignore the header on complete.

Every object carries its sha256 in its user metadata (``x-amz-meta-letl-sha256``), with the
labels its writer gives (the lake's: dataset, branch, partition, version), so that a client with
only S3 credentials can verify what it downloads. Metadata is sent before the first byte of a
multipart upload, so a large object's sha256 must be known first: a move declares the recorded
one, and a file is hashed before it is sent; the bytes sent are checked against it before the
upload completes, and a mismatch stores nothing.

boto3 is imported inside functions so that importing this module stays cheap.
"""

import io
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

import xxhash

from letl.lake.config import setting
from letl.lake.errors import NotFound, TierUnavailable, VerificationFailed
from letl.storage.contract import Written, hash_file, hash_stream, validate_key
from letl.storage.s3_transfer import FIELD, SHA256_LABEL, Proofs, RangedReader, Upload, checksum, checksum_field, encoded
from letl.storage.transfer import BLOCK, parallel_digest, pipe

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3 rejects non-final parts smaller than this
_MISSING = {"404", "NoSuchKey", "NotFound"}
_AUTH = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
         "ExpiredToken", "InvalidClientTokenId", "AuthorizationHeaderMalformed"}


class S3ProbeError(TierUnavailable):
    """The bucket cannot be used; ``reason`` is 'unreachable', 'credentials', 'no_bucket' or 'other'."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def make_s3_client(endpoint_url: str, access_key: str, secret_key: str, region: str = "us-east-1",
                   max_attempts: int = 3, connect_timeout: float = 5.0) -> Any:
    """A boto3 S3 client for S3-compatible servers.

    Built with boto3 directly: dagster_aws.s3.S3Resource(...).get_client() accepts no
    botocore ``Config``, so it cannot set path-style addressing or the checksum mode
    (and importing dagster_aws.s3 costs about a second). Checksums are computed only
    when an operation requires them, because older servers (CORTX, some MinIO/Ceph
    releases) reject the CRC headers that boto3 sends by default since 1.36.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        max_pool_connections=max(10, 2 * setting("LETL_S3_MAX_CONCURRENCY")),  # a transfer's parallel requests, with room
    )
    return boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, region_name=region, config=config)


def _code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _client_error() -> type[Exception]:
    from botocore.exceptions import ClientError

    return ClientError


class S3Backend:
    """Objects named ``prefix + key`` in one bucket."""

    def __init__(self, client: Any, bucket: str, prefix: str = "",
                 multipart_threshold: int = 64 * MiB, part_size: int = 16 * MiB,
                 max_concurrency: int | None = None, checksums: bool | None = None):
        # Parts or ranges in flight at once (boto3's upload_file and download_file use 10). Memory for
        # one transfer is about part_size (or 8 MiB when reading) times this.
        if max_concurrency is None:
            max_concurrency = setting("LETL_S3_MAX_CONCURRENCY")
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes (the S3 minimum part size)")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        if prefix:
            # A prefix is a folder: 'lake' and 'lake/' both name objects 'lake/<key>'.
            prefix = validate_key(prefix.strip("/")) + "/"
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.multipart_threshold, self.part_size = multipart_threshold, part_size
        self.proofs = Proofs()
        # CRC32 on every part, checked by the server, proves an upload without reading it back; off
        # for a server that refuses additional checksums (then every upload is read back).
        self.checksums = setting("LETL_S3_CHECKSUMS") if checksums is None else checksums

    def __repr__(self) -> str:
        return f"S3Backend({self.client.meta.endpoint_url}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _where(self, name: str) -> str:
        return f"s3://{self.bucket}/{name} at {self.client.meta.endpoint_url}"

    @contextmanager
    def _reach(self):
        """A refused, dropped or timed-out connection means the tier is out of reach, not a bug:
        callers see TierUnavailable (one line, exit code 7, HTTP 502), never botocore's own error."""
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        try:
            yield
        except (BotoConnectionError, HTTPClientError) as e:
            raise TierUnavailable(f"S3 endpoint {self.client.meta.endpoint_url}, bucket {self.bucket!r}: "
                                  f"unreachable ({e})") from e

    # -- writing -----------------------------------------------------------------------

    def put(self, key: str, stream: BinaryIO, labels: Mapping[str, str] | None = None) -> Written:
        """See the contract; ``labels`` become the object's user metadata, and a ``letl-sha256`` among
        them is a promise: bytes with another sha256 are refused (VerificationFailed), nothing stored."""
        with self._reach():
            return self._put(self._name(key), stream, dict(labels or {}))

    def _put(self, name: str, stream: BinaryIO, labels: dict[str, str]) -> Written:
        upload = Upload(self, name, labels)
        try:
            return upload.finish(Written(*pipe(stream, upload.write)))  # reading and sha256 overlap the sends
        except BaseException:
            upload.abort()  # nothing becomes visible: the parts of an aborted upload are discarded
            raise

    def _put_small(self, name: str, body: bytes, checksum: str, written: Written,
                   labels: dict[str, str]) -> str | None:
        """The checksum the server reports for the stored object, or None if the key already held these bytes."""
        try:
            return self.client.put_object(Bucket=self.bucket, Key=name, Body=body, IfNoneMatch="*",
                                          Metadata=labels, **checksum_field(self, checksum)).get(FIELD)
        except _client_error() as e:
            if _code(e) not in ("PreconditionFailed", "412"):
                raise
            self._same_or_raise(name, written)
        return None

    def _complete(self, name: str, upload_id: str, parts: list[dict], written: Written) -> str | None:
        """The checksum the server reports for the completed object, or None if the key already held these bytes."""
        # Belt and braces for servers that ignore If-None-Match on complete.
        if self._exists_name(name):
            self._abort(name, upload_id)
            self._same_or_raise(name, written)
            return None
        try:
            return self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                         MultipartUpload={"Parts": parts}, IfNoneMatch="*").get(FIELD)
        except _client_error() as e:
            if _code(e) not in ("PreconditionFailed", "412"):
                raise
            self._abort(name, upload_id)  # a refused complete leaves the upload open
            self._same_or_raise(name, written)
        return None

    def _abort(self, name: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except Exception:  # already gone, or the server is down: clean_temp() catches it later
            pass

    def _same_or_raise(self, name: str, written: Written) -> None:
        with self._open(name) as body:
            if hash_stream(body) != written:
                raise FileExistsError(f"{self._where(name)} already holds different data")

    def put_file(self, key: str, path: Path, labels: Mapping[str, str] | None = None) -> Written:
        """Store a local file under key; the file is deleted once the object is stored. A file sent
        in parts is hashed first: its sha256 goes out with the upload's start, before its bytes."""
        path = Path(path)
        labels = dict(labels or {})
        if SHA256_LABEL not in labels and path.stat().st_size > self.multipart_threshold:
            labels[SHA256_LABEL] = hash_file(path).sha256
        with open(path, "rb") as f:
            written = self.put(key, f, labels)
        path.unlink()
        return written

    def replace(self, key: str, data: bytes, labels: Mapping[str, str] | None = None) -> None:
        """A small mutable object (a pointer, not a version), replaced whole by one PUT: a reader sees
        the old bytes or the new ones, never a mix. Not part of the storage contract, which keeps
        every object immutable: only the S3 tier's latest pointers (lake/pointers.py) use it."""
        name = self._name(key)
        self.proofs.forget(name)
        with self._reach():
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data, Metadata=dict(labels or {}),
                                   **checksum_field(self, encoded(checksum(data))))

    def labels(self, key: str) -> dict[str, str]:
        """The object's user metadata (``x-amz-meta-*`` without the prefix); NotFound if key holds none."""
        name = self._name(key)
        try:
            with self._reach():
                return self.client.head_object(Bucket=self.bucket, Key=name).get("Metadata", {})
        except _client_error() as e:
            if _code(e) in _MISSING:
                raise NotFound(f"no object {self._where(name)}") from None
            raise

    # -- reading -----------------------------------------------------------------------

    def _open(self, name: str) -> BinaryIO:
        # The first block comes with the object's size and ETag: one round trip for a small object.
        try:
            with self._reach():
                response = self.client.get_object(Bucket=self.bucket, Key=name, Range=f"bytes=0-{BLOCK - 1}")
                with response["Body"] as body:
                    first = body.read()
        except _client_error() as e:
            if _code(e) in _MISSING:
                raise NotFound(f"no object {self._where(name)}") from None
            if _code(e) in ("InvalidRange", "416"):  # only an empty object has no byte 0
                return io.BytesIO(b"")
            raise
        total = response.get("ContentRange", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else len(first)
        etag = response["ETag"]
        return RangedReader(lambda start, end: self._block(name, start, end, etag), size, first,
                            self.max_concurrency)

    def _block(self, name: str, start: int, end: int, etag: str) -> bytes:
        """Bytes [start, end) of the object as it was when its read began (If-Match: its ETag)."""
        try:
            with self._reach():
                body = self.client.get_object(Bucket=self.bucket, Key=name, Range=f"bytes={start}-{end - 1}",
                                              IfMatch=etag)["Body"]
                with body:
                    return body.read()
        except _client_error() as e:
            if _code(e) in _MISSING:
                raise NotFound(f"no object {self._where(name)}") from None
            if _code(e) in ("PreconditionFailed", "412"):
                raise VerificationFailed(f"{self._where(name)} was replaced while being read") from None
            raise

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream; past its first block, `max_concurrency` ranged GETs run ahead
        of the reader. Close it when done."""
        return self._open(self._name(key))

    def fast_digest(self, key: str) -> str:
        """The transfer.BlockHash digest of the stored object.

        An object this backend uploaded, whose HEAD still reports the size and the checksum its
        upload predicted (every part checked by the server against its CRC32 on receipt), holds
        the bytes that were sent: their digest is returned without a read. Any other object is read
        back, its blocks fetched and hashed by `max_concurrency` ranged GETs at once."""
        name = self._name(key)
        try:
            with self._reach():
                mode = {"ChecksumMode": "ENABLED"} if self.checksums else {}
                head = self.client.head_object(Bucket=self.bucket, Key=name, **mode)
        except _client_error() as e:
            if _code(e) in _MISSING:
                raise NotFound(f"no object {self._where(name)}") from None
            raise
        proven = self.proofs.digest(name, head)
        if proven is not None:
            return proven
        return parallel_digest(head["ContentLength"],
                               lambda start, end: xxhash.xxh3_128(self._block(name, start, end, head["ETag"])).digest(),
                               self.max_concurrency)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, fewer if it ends sooner: one ranged GET."""
        name = self._name(key)
        if end <= start:
            return b""  # no GET: AWS ignores a range like 'bytes=5-4' and sends the whole object
        try:
            with self._reach():
                body = self.client.get_object(Bucket=self.bucket, Key=name, Range=f"bytes={start}-{end - 1}")["Body"]
        except _client_error() as e:
            if _code(e) in ("InvalidRange", "416"):  # start at or past the end of the object
                return b""
            if _code(e) in _MISSING:
                raise NotFound(f"no object {self._where(name)}") from None
            raise
        with body:
            return body.read()

    def local_path(self, key: str) -> Path | None:
        return None

    def _exists_name(self, name: str) -> bool:
        try:
            with self._reach():
                self.client.head_object(Bucket=self.bucket, Key=name)
            return True
        except _client_error() as e:
            if _code(e) in _MISSING:
                return False
            raise

    def exists(self, key: str) -> bool:
        return self._exists_name(self._name(key))

    def delete(self, key: str) -> None:
        name = self._name(key)
        self.proofs.forget(name)
        with self._reach():
            self.client.delete_object(Bucket=self.bucket, Key=name)  # S3 deletes are idempotent

    def discard(self, key: str) -> None:
        """The same as delete: the server frees the space, nothing is left for the caller to wait on."""
        self.delete(key)

    def _objects(self, prefix: str) -> Iterator[dict]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        with self._reach():
            for page in pages:
                yield from page.get("Contents", [])

    def usage(self) -> int:
        return sum(obj["Size"] for obj in self._objects(""))

    def keys(self, prefix: str = "") -> Iterator[str]:
        for obj in self._objects(prefix):
            yield obj["Key"][len(self.prefix):]

    def clean_temp(self, older_than: float = 0) -> int:
        """Abort multipart uploads left under the prefix by interrupted writes, started at least
        older_than seconds ago (a younger one may belong to a live writer); returns how many."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than)
        aborted = 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
        with self._reach():
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload.get("Initiated", cutoff) > cutoff:
                        continue
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
        return aborted

    # -- setup -------------------------------------------------------------------------

    def probe(self) -> None:
        """One listing call; raises S3ProbeError saying what is wrong and where."""
        from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        where = f"S3 endpoint {self.client.meta.endpoint_url}, bucket {self.bucket!r}"
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except (BotoConnectionError, HTTPClientError) as e:  # refused, DNS, TLS, timeouts, dropped
            raise S3ProbeError(f"{where}: endpoint unreachable (connection failed: {e}); "
                               "is the server running and the URL right?", "unreachable") from e
        except NoCredentialsError as e:
            raise S3ProbeError(f"{where}: no credentials configured", "credentials") from e
        except ClientError as e:
            code = _code(e)
            if code in ("NoSuchBucket", "404"):
                raise S3ProbeError(f"{where}: bucket does not exist (create it with ensure_bucket())",
                                   "no_bucket") from e
            if code in _AUTH:
                raise S3ProbeError(f"{where}: credentials or permissions rejected ({code}); "
                                   "check the access key and secret key", "credentials") from e
            raise S3ProbeError(f"{where}: unexpected error {code}: {e}", "other") from e

    def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing; returns True if it was created."""
        try:
            self.probe()
            return False
        except S3ProbeError as e:
            if e.reason != "no_bucket":
                raise
        region = self.client.meta.region_name
        extra = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        try:
            self.client.create_bucket(Bucket=self.bucket, **extra)
        except _client_error() as e:
            if _code(e) != "BucketAlreadyOwnedByYou":  # lost a race with another creator: fine
                raise
        return True

