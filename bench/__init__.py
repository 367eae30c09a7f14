"""fundledger's benchmark (run it with scripts/bench; see docs/PERFORMANCE.md)."""
