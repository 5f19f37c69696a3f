#!/usr/bin/env bash
# One-line setup on a fresh machine: system packages (FFmpeg for media decoding), then the project.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && ! command -v ffmpeg >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e ".[dev]"
echo "biovita installed: $(biovita-data --version)"
