"""Headless-Chromium playback of an HLS output with hls.js (``python -m tests.support.player.serve``)."""
