"""Layer cache: pure cache-key derivation and the contract of the cache back ends."""

from lamina.cache._dir import DirLayerCache
from lamina.cache._keys import KeyInputs, SourceEntry, cache_key, explain_miss, hash_sources
from lamina.cache._store import CacheHit, CacheLookup, LayerCache

__all__ = [
    "CacheHit",
    "CacheLookup",
    "DirLayerCache",
    "KeyInputs",
    "LayerCache",
    "SourceEntry",
    "cache_key",
    "explain_miss",
    "hash_sources",
]
