"""Small helpers every layer may use: atomic writes, the cache folder, input checks,
eval-mode, and the registry. Nothing here imports the rest of prunekit but errors."""
