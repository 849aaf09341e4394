"""Layer cache: pure cache-key derivation, the cache back ends and the base-image cache."""

from lamina.cache._background import BackgroundCache
from lamina.cache._baseimages import BaseImageCache, WarmResult, warm_base_images
from lamina.cache._dir import DirLayerCache
from lamina.cache._keys import KeyInputs, SourceEntry, cache_key, explain_miss, hash_sources
from lamina.cache._lazy import CorruptedCacheError, LazyLayer, fetch_all
from lamina.cache._oci import OCILayoutLayerCache
from lamina.cache._open import CompositeLayerCache, ReadOnlyLayerCache, open_layer_cache
from lamina.cache._registry import RegistryLayerCache
from lamina.cache._store import CacheHit, CacheLookup, LayerCache

__all__ = [
    "BackgroundCache",
    "BaseImageCache",
    "CacheHit",
    "CacheLookup",
    "CompositeLayerCache",
    "CorruptedCacheError",
    "DirLayerCache",
    "KeyInputs",
    "LayerCache",
    "LazyLayer",
    "OCILayoutLayerCache",
    "ReadOnlyLayerCache",
    "RegistryLayerCache",
    "SourceEntry",
    "WarmResult",
    "cache_key",
    "explain_miss",
    "fetch_all",
    "hash_sources",
    "open_layer_cache",
    "warm_base_images",
]
