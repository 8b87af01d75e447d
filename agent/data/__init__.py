"""Data sources: fingerprints, ledger snapshots and drift of tabular files."""
