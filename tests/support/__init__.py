"""What tests (and the benchmarks) share: media makers, a SeaweedFS server, a fault proxy, a canary, a player.

Nothing here defines pytest fixtures (those live in ``tests/conftest.py``), so
importing a module here needs no pytest.
"""
