"""The backend behind a tier location: a directory, ``s3://bucket/prefix`` or ``daos://pool/cont[/dict]``.

An object store's client library is imported only when a tier of that kind is first used, so a lake
of directories never imports boto3 or pydaos.
"""

import json
from pathlib import Path

from letl.lake.config import TierSpec, object_store_credentials, setting
from letl.lake.errors import InvalidInput
from letl.storage.contract import Backend
from letl.storage.posix import PosixBackend


def make_backend(spec: TierSpec, home: Path) -> Backend:
    if spec.scheme == "file":
        return PosixBackend(spec.path)
    rest = spec.location.split("://", 1)[1]
    if spec.scheme == "s3":
        from letl.storage.s3 import S3Backend, make_s3_client

        bucket, _, prefix = rest.partition("/")
        endpoint, key, secret, region = _s3_settings(home)
        return S3Backend(make_s3_client(endpoint, key, secret, region), bucket, prefix.strip("/") + "/" if prefix else "")
    if spec.scheme == "daos":
        from letl.storage.daos import DaosBackend

        pool, cont, *name = rest.split("/")
        return DaosBackend(pool, cont, dict_name=name[0] if name else "letl")
    raise InvalidInput(f"tier {spec.name}: unsupported location {spec.location!r} (use a path, s3:// or daos://)")


def _s3_settings(home: Path) -> tuple[str, str, str, str]:
    """LETL_S3_* for a real CORTX/S3 endpoint, else the local server `letl objectstore up` started."""
    if setting("LETL_S3_ENDPOINT"):
        return (setting("LETL_S3_ENDPOINT"), setting("LETL_S3_ACCESS_KEY_ID"),
                setting("LETL_S3_SECRET_ACCESS_KEY"), setting("LETL_S3_REGION"))
    state = json.loads(object_store_credentials(home).read_text())
    return state["endpoint"], state["access_key"], state["secret_key"], "us-east-1"
