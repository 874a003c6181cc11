"""The error classes the table must cover, for the tests of every face that maps them (lake, CLI, API)."""

import importlib
import pkgutil

import letl
from letl.lake import errors


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def every_error() -> list[type]:
    """LetlError and every subclass defined anywhere in letl (importing each module defines them)."""
    for module in pkgutil.walk_packages(letl.__path__, "letl."):
        importlib.import_module(module.name)
    return [errors.LetlError, *_subclasses(errors.LetlError)]


def made(cls: type, message: str) -> BaseException:
    """An instance as its raiser makes it, or, for one whose constructor takes more, the bare type with this message."""
    try:
        return cls(message)
    except TypeError:
        exc = cls.__new__(cls)
        exc.args = (message,)
        return exc
