"""Tests of the ``api_client`` package."""
