"""Tests of data fingerprints, snapshots and drift."""
