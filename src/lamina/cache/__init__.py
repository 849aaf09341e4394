"""Layer cache: pure cache-key derivation (and, later, local and registry-backed caches)."""

from lamina.cache._keys import KeyInputs, SourceEntry, cache_key, explain_miss, hash_sources

__all__ = ["KeyInputs", "SourceEntry", "cache_key", "explain_miss", "hash_sources"]
