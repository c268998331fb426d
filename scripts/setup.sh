#!/usr/bin/env bash
# Usage: scripts/setup.sh
#
# Idempotent set-up for a bare Debian/Ubuntu machine (and the same steps inside the Dockerfile):
#   1. apt packages: sox (FLAC/WAV conversion), espeak-ng (synthetic corpus voices),
#      fortunes (offline English prose for the synthetic corpus), flac.
#   2. a virtual environment in .venv with the pinned requirements (requirements.txt, requirements-dali.txt).
# A second run does nothing: each step is skipped when its result is already there.
# Environment: WITH_DALI=true|false (default true) installs NVIDIA DALI; VENV=path (default .venv);
#              NO_VENV=true installs into the current python (used by the Dockerfile);
#              KEEP_TORCH=true keeps that python's torch (the NGC image's CUDA build) instead of the CPU pin.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_DALI=${WITH_DALI:-true}
NO_VENV=${NO_VENV:-false}
KEEP_TORCH=${KEEP_TORCH:-false}
VENV=${VENV:-.venv}
for flag in WITH_DALI NO_VENV KEEP_TORCH; do
  case "${!flag}" in true|false) ;; *) echo "setup.sh: $flag must be 'true' or 'false', got '${!flag}'" >&2; exit 2;; esac
done

APT_PACKAGES="sox libsox-fmt-all espeak-ng flac fortunes"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "setup.sh: installing apt packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

REQS="requirements.txt"
[ "$WITH_DALI" = true ] && REQS="$REQS requirements-dali.txt"
if [ "$NO_VENV" = true ]; then
  PY=python3
else
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  PY="$VENV/bin/python"
fi
stamp="$VENV/.requirements.sha256"
want=$(cat $REQS | sha256sum | cut -d' ' -f1)
if [ "$NO_VENV" = true ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup.sh: installing Python requirements ($REQS)"
  args=""; for r in $REQS; do args="$args -r $r"; done
  if [ "$KEEP_TORCH" = true ]; then
    "$PY" -c "import torch" || { echo "setup.sh: KEEP_TORCH=true but $PY has no torch" >&2; exit 2; }
    kept=$(mktemp); grep -hv '^torch==' $REQS > "$kept"; args="-r $kept"
  fi
  "$PY" -m pip install -q --disable-pip-version-check $args
  [ -z "${kept:-}" ] || rm -f "$kept"
  [ "$NO_VENV" = true ] || echo "$want" > "$stamp"
fi
