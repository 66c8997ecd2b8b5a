"""Reference implementations used as test oracles (never shipped in the package)."""
