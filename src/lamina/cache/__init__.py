"""Layer cache: pure cache-key derivation; local and registry-backed layer caches."""
