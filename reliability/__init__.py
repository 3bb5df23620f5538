"""Reliability tools: the soak run and the fuzz run (see RELIABILITY.md)."""
