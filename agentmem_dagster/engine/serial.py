"""Small values handed between steps (op outputs: shard descriptions, what a writer did) as
JSON, never pickle: reading a staged file back can build only plain JSON values, paths,
tuples and this package's own dataclasses, and runs no code from the file."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path
from typing import Any

PACKAGE = __name__.split(".")[0] + "."
TAGS = ("__path__", "__tuple__", "__dataclass__", "__dict__")


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cannot stage a non-finite float: {value!r}")
        return value
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"cannot stage a dict whose keys are not all strings: {list(value)[:5]!r}")
        out = {key: _encode(v) for key, v in value.items()}
        return {"__dict__": out} if len(out) == 1 and next(iter(out)) in TAGS else out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith(PACKAGE):
            raise TypeError(f"cannot stage a {cls.__module__}.{cls.__qualname__}: only {PACKAGE[:-1]}'s own dataclasses")
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return {"__dataclass__": [f"{cls.__module__}:{cls.__qualname__}", fields]}
    raise TypeError(f"cannot stage a {type(value).__name__} as JSON")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, inner), = value.items()
        if tag == "__path__":
            return Path(inner)
        if tag == "__tuple__":
            return tuple(_decode(v) for v in inner)
        if tag == "__dict__":
            return {key: _decode(v) for key, v in inner.items()}
        if tag == "__dataclass__":
            name, fields = inner
            return _dataclass(name)(**{key: _decode(v) for key, v in fields.items()})
    return {key: _decode(v) for key, v in value.items()}


def _dataclass(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith(PACKAGE) or not qualname or "." in qualname:
        raise ValueError(f"refusing to build {name!r}: only {PACKAGE[:-1]}'s own dataclasses")
    cls = getattr(importlib.import_module(module), qualname, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"refusing to build {name!r}: not a dataclass")
    return cls


def dumps(value: Any) -> str:
    return json.dumps(_encode(value), ensure_ascii=False, allow_nan=False)


def loads(text: str) -> Any:
    return _decode(json.loads(text))
