"""An in-process stand-in for ``pydaos`` (DAOS 2.4/2.6), for tests on machines without DAOS.

It follows the upstream code, written here from how that code behaves rather than
copied from it. Each behaviour comes from the source named below:

daos-stack/daos src/client/pydaos/__init__.py
  - ``PyDError(message, rc)``. ``str()`` gives ``"<message>: <DER name>"``, the name
    coming from ``d_errstr(rc)``.
daos-stack/daos src/client/pydaos/pydaos_core.py (DCont / DDict / DObjNotFound, 2022+)
  - ``DCont(pool=None, cont=None, path=None)`` needs a path, or both pool and cont:
    otherwise ``PyDError("invalid pool or container UUID", -DER_INVAL)``.
  - ``DCont.get(name)`` raises ``DObjNotFound`` for an unknown name, and
    ``DCont[name]`` does the same as ``get``.
  - ``DCont.dict(name, v=None, cid="0")`` creates the dictionary, then ``bput(v)``.
    If the name exists it raises ``PyDError("failed to create DAOS dict", -DER_EXIST)``,
    because the shim's cont_newobj inserts with DAOS_COND_KEY_INSERT. ``cid`` is from
    daos-stack/daos PR #11952: "0" picks the class automatically, and any other
    value is looked up as ``ObjClassID[cid]``, so an unknown name raises KeyError.
  - ``DCont.array()``: the real ``DArray._open`` raises NotImplementedError.
  - ``DDict.get(key)`` raises ``KeyError`` when the key is missing (bget gives None).
    ``put(key, val)`` is ``bput({key: val})``. ``__delitem__(key)`` and ``pop(key)``
    both amount to ``put(key, None)``, and ``pop`` returns None.
  - ``bget(d, value_size=None)`` returns ``None`` for ``d=None`` and otherwise returns
    ``d``, filled in place. ``bput(d)`` does nothing for ``d=None``.
  - ``dump()`` is ``{key: value}``, ``__len__`` counts by iterating, ``__bool__``,
    ``__contains__`` is ``get`` with KeyError caught, and ``__eq__`` compares with a
    mapping.
  - ``str(DDict)`` is its name. ``str(DCont)`` is ``"pool/cont"`` and
    ``repr(DCont)`` is ``"daos://pool/cont"``.
daos-stack/daos src/client/pydaos/pydaos_shim.c (kv_put / kv_get / kv_iter)
  - kv_put: a value of None, or one of zero length, is a ``daos_kv_remove``, so
    **an empty value deletes the key**. A ``str`` value is stored as UTF-8. Any
    other value must be ``bytes``: ``PyBytes_AsStringAndSize`` raises TypeError for
    bytearray, memoryview and int. A key may be ``str`` (UTF-8) or ``bytes``.
  - kv_put/kv_get take a ``dict`` only (``O!`` with ``PyDict_Type``), else TypeError.
  - kv_get fills each value as ``bytes``, or ``None`` when the key is absent.
  - kv_iter returns the keys as ``str``, in DAOS hash order, which is not insertion
    order.
  - A bput is up to 16 concurrent puts. If one fails, the ones issued before it
    may already have landed. The double applies entries in order and stops at the
    failing one.
gurt errno (src/include/gurt/errno.h): DER_INVAL=1003, DER_EXIST=1004,
  DER_NONEXIST=1005 and DER_NOSPACE=1007. The shim returns them negated.

Additions that exist only in the double, for tests:
  - ``create_container(pool, cont, path=None)`` is ``daos cont create --type PYTHON``.
    Opening a container that was never created fails as in DAOS, with
    ``PyDError("failed to access container", -DER_NONEXIST)``.
  - ``reset()`` forgets every container. ``raw(pool, cont, name)`` gives the stored
    ``{key: bytes}``.
  - ``LOG`` records every KV operation (``("put", key, nbytes)``,
    ``("remove", key, "none" | "empty")``), so tests can prove the backend never
    asks for an empty value.
  - ``FAULTS`` injects failures. ``FAULTS.puts_left = n`` lets n more value writes
    succeed, and then every write raises ``PyDError(-DER_NOSPACE)``.
    ``FAULTS.fail_removes = True`` makes removes fail.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

DER_SUCCESS = 0
DER_INVAL = 1003
DER_EXIST = 1004
DER_NONEXIST = 1005
DER_NOSPACE = 1007
_DER_NAMES = {DER_INVAL: "DER_INVAL", DER_EXIST: "DER_EXIST", DER_NONEXIST: "DER_NONEXIST", DER_NOSPACE: "DER_NOSPACE"}

PYDAOS_DICT, PYDAOS_ARRAY = 0, 1  # pydaos_shim.c enum pydaos_otype
_OBJECT_CLASSES = {"OC_S1", "OC_S2", "OC_SX", "OC_RP_2G1", "OC_RP_2GX", "OC_RP_3G1", "OC_EC_2P1G1", "OC_EC_4P2G1"}


class PyDError(Exception):
    """Raised when a DAOS operation cannot be completed (rc is a negative DER_* code)."""

    def __init__(self, message: str, rc: int):
        name = _DER_NAMES.get(-rc) or _DER_NAMES.get(rc)
        self.message = f"{message}: {name}" if name else f"{message}: {rc}"

    def __str__(self) -> str:
        return self.message


class DObjNotFound(Exception):
    """Raised by DCont.get if no DAOS object is associated with the name."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(self)

    def __str__(self) -> str:
        return f"Failed to open '{self.name}'"


@dataclass
class Faults:
    puts_left: int | None = None  # None: no injected put failure
    fail_removes: bool = False


FAULTS = Faults()
LOG: list[tuple[str, str, Any]] = []
# (pool, cont) -> {name: (otype, {key: bytes})}
_CONTAINERS: dict[tuple[str, str], dict[str, tuple[int, dict[str, bytes]]]] = {}
_PATHS: dict[str, tuple[str, str]] = {}


def create_container(pool: str, cont: str, path: str | None = None) -> None:
    """`daos cont create <pool> <cont> --type PYTHON` (and a UNS path, if given)."""
    _CONTAINERS.setdefault((pool, cont), {})
    if path is not None:
        _PATHS[path] = (pool, cont)


def reset() -> None:
    _CONTAINERS.clear()
    _PATHS.clear()
    LOG.clear()
    FAULTS.puts_left, FAULTS.fail_removes = None, False


def raw(pool: str, cont: str, name: str) -> dict[str, bytes]:
    """The stored key/value pairs of one dictionary (the live store, not a copy)."""
    return _CONTAINERS[(pool, cont)][name][1]


class DCont:
    """A DAOS container of type PYTHON, holding named objects."""

    def __init__(self, pool: str | None = None, cont: str | None = None, path: str | None = None):
        if path is None and (pool is None or cont is None):
            raise PyDError("invalid pool or container UUID", -DER_INVAL)
        if path is not None:
            if path not in _PATHS:
                raise PyDError("failed to access container", -DER_NONEXIST)
            pool, cont = _PATHS[path]
            self.pool, self.cont = None, None  # as upstream: a path-opened DCont does not know its labels
        else:
            self.pool, self.cont = pool, cont
        if (pool, cont) not in _CONTAINERS:
            raise PyDError("failed to access container", -DER_NONEXIST)
        self._root = _CONTAINERS[(pool, cont)]

    def get(self, name: str) -> "DDict":
        entry = self._root.get(name)
        if entry is None:
            raise DObjNotFound(name)
        otype, store = entry
        if otype == PYDAOS_ARRAY:
            raise NotImplementedError  # upstream DArray._open
        return DDict(name, store, self)

    def __getitem__(self, name: str) -> "DDict":
        return self.get(name)

    def dict(self, name: str, v: dict | None = None, cid: str = "0") -> "DDict":
        if cid != "0" and cid not in _OBJECT_CLASSES:
            raise KeyError(cid)  # ObjClassID[cid]
        if name in self._root:
            raise PyDError("failed to create DAOS dict", -DER_EXIST)
        self._root[name] = (PYDAOS_DICT, {})
        dd = DDict(name, self._root[name][1], self)
        dd.bput(v)
        return dd

    def array(self, name: str, v: list | None = None, cid: str = "0") -> None:
        if name in self._root:
            raise PyDError("failed to create DAOS array", -DER_EXIST)
        self._root[name] = (PYDAOS_ARRAY, {})
        raise NotImplementedError  # upstream DArray._open

    def __str__(self) -> str:
        return f"{self.pool}/{self.cont}"

    def __repr__(self) -> str:
        return f"daos://{self.pool}/{self.cont}"


def _key_str(key: Any) -> str:
    if isinstance(key, str):
        text = key
    elif isinstance(key, bytes):
        text = key.decode("utf-8", "surrogateescape")
    else:
        raise TypeError(f"expected bytes, {type(key).__name__} found")
    return text.split("\0", 1)[0]  # the shim hands DAOS a C string


class DDict:
    """A DAOS key-value object that behaves like a dict of str -> bytes."""

    value_size = 1024 * 1024

    def __init__(self, name: str, store: dict[str, bytes], cont: DCont):
        self.name = name
        self._store = store
        self.cont = cont

    def get(self, key: Any) -> bytes:
        d = {key: None}
        self.bget(d)
        if d[key] is None:
            raise KeyError(key)
        return d[key]

    def __getitem__(self, key: Any) -> bytes:
        return self.get(key)

    def put(self, key: Any, val: Any) -> None:
        self.bput({key: val})

    def __setitem__(self, key: Any, val: Any) -> None:
        self.put(key, val)

    def __delitem__(self, key: Any) -> None:
        self.put(key, None)

    def pop(self, key: Any) -> None:
        self.put(key, None)

    def bget(self, d: dict | None, value_size: int | None = None) -> dict | None:
        if d is None:
            return d
        if not isinstance(d, dict):
            raise TypeError(f"argument 2 must be dict, not {type(d).__name__}")
        if value_size is not None and not isinstance(value_size, int):
            raise TypeError("an integer is required for value_size")
        for key in list(d):
            value = self._store.get(_key_str(key))
            LOG.append(("get", _key_str(key), None if value is None else len(value)))
            d[key] = value
        return d

    def bput(self, d: dict | None) -> None:
        if d is None:
            return
        if not isinstance(d, dict):
            raise TypeError(f"argument 2 must be dict, not {type(d).__name__}")
        for key, value in d.items():
            if value is None:
                data, why = b"", "none"
            elif isinstance(value, str):
                data, why = value.encode("utf-8"), "empty"
            elif isinstance(value, bytes):
                data, why = value, "empty"
            else:
                raise TypeError(f"expected bytes, {type(value).__name__} found")
            name = _key_str(key)
            if not name:
                raise PyDError("failed to store KV value", -DER_INVAL)
            if data:
                if FAULTS.puts_left is not None:
                    if FAULTS.puts_left <= 0:
                        raise PyDError("failed to store KV value", -DER_NOSPACE)
                    FAULTS.puts_left -= 1
                LOG.append(("put", name, len(data)))
                self._store[name] = bytes(data)
            else:
                if FAULTS.fail_removes:
                    raise PyDError("failed to store KV value", -DER_NOSPACE)
                LOG.append(("remove", name, why))
                self._store.pop(name, None)

    def dump(self) -> dict[str, bytes]:
        d = dict.fromkeys(self)
        self.bget(d)
        return d

    def __iter__(self) -> Iterator[str]:
        # A snapshot in a hash order, like DAOS enumeration (not insertion order).
        return iter(sorted(self._store, key=lambda k: hashlib.blake2b(k.encode(), digest_size=8).digest()))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        for _ in self:
            return True
        return False

    def __contains__(self, key: Any) -> bool:
        try:
            self.get(key)
            return True
        except KeyError:
            return False

    def __eq__(self, other: Any) -> bool:
        if len(other) != len(self):
            return False
        try:
            return all(self[key] == other[key] for key in other)
        except KeyError:
            return False

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.name
