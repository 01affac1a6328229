"""Writeback adapters, one class per target kind, chosen by `WritebackTarget.kind`."""

from __future__ import annotations

from typing import Any

from writeback.adapters.base import Adapter
from writeback.adapters.files import FileAdapter
from writeback.adapters.rest import RestAdapter

ADAPTERS: dict[str, type[Adapter]] = {cls.kind: cls for cls in (RestAdapter, FileAdapter)}


def adapter_for(target: Any) -> Adapter:
    return ADAPTERS[target.kind](target)
