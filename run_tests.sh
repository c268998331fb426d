#!/usr/bin/env bash
# Usage: ./run_tests.sh [pytest args...]
#
# Sets up the machine (scripts/setup.sh: apt packages, .venv, pinned requirements) and runs the test suite.
# The whole suite runs in well under 15 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
source scripts/threads.sh
exec .venv/bin/python -m pytest "$@"
