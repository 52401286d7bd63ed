"""Tests of the ``api_reference`` package."""
