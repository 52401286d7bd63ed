"""The test suite: one directory per package it tests, shared helpers in :mod:`tests.support`."""
