"""End-to-end tests: a real Home Assistant process and a real browser.

They run in their own pytest invocation without the Home Assistant test
harness plugin (``pytest -p no:homeassistant tests/e2e``; ``scripts/test``
does this), because the harness blocks sockets and patches Home Assistant in
every test of its session.
"""
