"""Reliability tests: soak, fuzzing, transport faults, bad input, security."""
