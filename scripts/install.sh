#!/usr/bin/env bash
# Install the project with every optional area into the active Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[all,test]"
