#!/usr/bin/env bash
# Set up the environment (tools/setup_env.sh) and run the test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -m "not slow"`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup_env.sh"
cd "$root"
venv=${X3D_VENV:-$root/.venv}
# Tools started by the tests (torchrun, mim) come from the environment too.
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" -m pytest "$@"
