"""Benchmarks and demo assets for the transcoding engine."""
