"""Tests of sharing the ledger through git and of the CI gate."""
