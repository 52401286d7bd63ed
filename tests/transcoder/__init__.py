"""Tests of the ``transcoder`` package."""
