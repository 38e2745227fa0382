"""Small helpers every layer may use: atomic writes, the cache folder, input checks,
eval-mode, seeded randomness, and the registry. Nothing here imports the rest of prunekit but errors."""
