"""Tests of the Cython HMM core."""
