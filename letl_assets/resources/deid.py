"""The pseudonymization key: from LETL_PSEUDONYM_KEY, else a key file made once under LETL_HOME."""

import os
import secrets
import uuid
from pathlib import Path
from typing import Callable, Optional

import dagster as dg

from letl.lake.config import setting


class PseudonymKey(dg.ConfigurableResource):
    """Secret for keyed patient pseudonyms (HMAC-SHA256). Same key, same pseudonym, every month."""

    key: Optional[str] = None
    key_file: Optional[str] = None

    def get(self, home: Path, log: Callable[[str], None]) -> bytes:
        value = self.key or setting("LETL_PSEUDONYM_KEY")
        if value:
            return value.encode()
        path = Path(self.key_file or setting("LETL_PSEUDONYM_KEY_FILE") or home / "pseudonym.key")
        if not path.exists():
            if _create_key_file(path):
                log(f"LETL_PSEUDONYM_KEY is unset: created a random key in {path} (mode 0600). "
                    "Keep it: a new key gives every patient a new pseudonym.")
        return path.read_text().strip().encode()


def _create_key_file(path: Path) -> bool:
    """Write the key whole or not at all; if another process won the race, keep its key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
