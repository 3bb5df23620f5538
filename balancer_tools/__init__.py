"""Tools around the protocol library that Home Assistant does not run.

* :mod:`balancer_tools.simulator`: the virtual balancer (device model, faults,
  quirks, serial/TCP servers, a fake Bluetooth client) used by the tests, the
  benchmarks, the soak and ``scripts/develop``.
* :mod:`balancer_tools.cli`: the ``scripts/balancer`` command line tool.

They import the library as ``custom_components.active_balancer.protocol`` and
are not shipped with the integration (HACS copies only its folder).
"""
