"""Tests of the protocol package (no Home Assistant needed)."""
