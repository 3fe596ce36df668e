#!/usr/bin/env bash
# The whole GPU measurement in one command (see bench/gpu_check.py): bash bench/gpu_check.sh [--smoke] [--only GROUP ...]
# Python: $PYTHON if set, else the repository's .venv, else python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
export PYTHONUNBUFFERED=1
exec "$python" "$root/bench/gpu_check.py" "$@"
