"""The benchmark of the active_balancer integration (``scripts/bench``).

Measures, on the virtual balancer with baud-rate pacing, how close a poll
comes to the wire limit, how it compares with the peer libraries (dalybms,
aiobmsble) and what it costs Home Assistant's event loop. See BENCHMARKS.md.
"""
