#!/usr/bin/env bash
# Install what tests/transcoder/test_player.py needs; idempotent, says what it did.
#
#   * Chromium, from the distribution (apt-get, Debian's "chromium" package) if
#     no chromium/chrome is on PATH (or $CHROMIUM names one). Debian's build
#     plays H.264/AAC through MediaSource.
#   * hls.js $HLSJS_VERSION from the npm registry into the cache dir
#     ($HLS_PLAYER_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/hls-transcoder-player),
#     where tests/support/player/serve.py looks for node_modules/hls.js/dist/hls.min.js.
#     Nothing is written into the repository.
#
# Needs root or sudo for apt-get (only when something is missing).
set -euo pipefail

HLSJS_VERSION="${HLSJS_VERSION:-1.7.4}"
CACHE_DIR="${HLS_PLAYER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hls-transcoder-player}"
HLS_JS="$CACHE_DIR/node_modules/hls.js/dist/hls.min.js"

say() { printf 'player setup: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no apt-get here: install $* yourself" >&2
        exit 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

find_chromium() {
    if [ -n "${CHROMIUM:-}" ]; then
        command -v "$CHROMIUM" || true
        return
    fi
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return
        fi
    done
}

# --- Chromium ---------------------------------------------------------------
browser="$(find_chromium)"
if [ -n "$browser" ]; then
    say "chromium present: $browser"
else
    say "installing chromium with apt-get"
    apt_install chromium
    browser="$(command -v chromium)"
    say "installed $browser"
fi
say "$("$browser" --version 2>/dev/null || echo "$browser: --version failed")"

# --- hls.js -------------------------------------------------------------------
installed_version() {
    local pkg="$CACHE_DIR/node_modules/hls.js/package.json"
    [ -f "$pkg" ] && sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pkg" | head -n 1
}

if [ -f "$HLS_JS" ] && [ "$(installed_version)" = "$HLSJS_VERSION" ]; then
    say "hls.js $HLSJS_VERSION present: $HLS_JS"
else
    if ! command -v npm >/dev/null 2>&1; then
        say "installing npm with apt-get"
        apt_install npm
    fi
    mkdir -p "$CACHE_DIR"
    say "installing hls.js@$HLSJS_VERSION with npm into $CACHE_DIR"
    npm install --prefix "$CACHE_DIR" --no-audit --no-fund --loglevel=error "hls.js@$HLSJS_VERSION"
    if [ ! -f "$HLS_JS" ]; then
        say "npm ran but $HLS_JS is missing" >&2
        exit 1
    fi
    say "installed hls.js $(installed_version): $HLS_JS"
fi
