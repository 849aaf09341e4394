"""Faster construction of the frozen, slotted dataclasses built once per instruction.

``dataclasses`` gives a frozen class an ``__init__`` that sets every field with
``object.__setattr__(self, "name", value)``. Parsing a large Dockerfile builds tens of
thousands of such records, and that generic call is a large share of the time.
:func:`fast_init` swaps in an ``__init__`` with the same signature (keyword-only
parameters, same defaults, same annotations) that stores each field through its slot
descriptor directly. Instances, equality, hashing, ``repr``, immutability and
``dataclasses.replace`` are unchanged.
"""

from __future__ import annotations

import dataclasses
from types import MemberDescriptorType
from typing import Any, TypeVar

__all__ = ["fast_init"]

_T = TypeVar("_T")


def fast_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted, keyword-only dataclass a faster equivalent ``__init__``.

    Classes using anything else (``default_factory``, ``init=False`` or ``InitVar``
    fields, ``__post_init__``) are returned untouched.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        return cls
    if hasattr(cls, "__post_init__"):
        return cls
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    namespace: dict[str, Any] = {}
    signature: list[str] = []
    body: list[str] = []
    for f in fields:
        if not f.init or not f.kw_only or f.default_factory is not dataclasses.MISSING:
            return cls
        if f.default is dataclasses.MISSING:
            signature.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            signature.append(f"{f.name}=_default_{f.name}")
        slot = getattr(cls, f.name, None)
        if not isinstance(slot, MemberDescriptorType):
            return cls
        namespace[f"_set_{f.name}"] = slot.__set__
        body.append(f"    _set_{f.name}(self, {f.name})")
    code = cls.__init__.__code__
    if code.co_argcount + code.co_kwonlyargcount - 1 != len(fields):
        return cls  # InitVar pseudo-fields: leave the generated __init__ alone
    source = "def __init__(self, *, " + ", ".join(signature) + "):\n"
    source += "\n".join(body) + "\n" if body else "    pass\n"
    exec(source, namespace)
    init = namespace["__init__"]
    original = cls.__init__
    init.__qualname__ = original.__qualname__
    init.__module__ = original.__module__
    init.__annotations__ = dict(original.__annotations__)
    init.__doc__ = original.__doc__
    type.__setattr__(cls, "__init__", init)
    return cls
