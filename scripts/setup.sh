#!/usr/bin/env bash
# Setup only (FFmpeg + git-lfs through apt, .venv, the project with its `dev` extra): `./biovita setup`.
exec "$(cd "$(dirname "$0")/.." && pwd)/biovita" setup "${1:-dev}"
