#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment at .venv with the
# tested stack. Re-running is cheap: nothing is reinstalled unless a
# requirements file changed.
#
#   X3D_VENV=path       where the environment goes (default: .venv)
#   X3D_REQUIREMENTS=f  the stack to install (default: requirements/cpu.txt;
#                       a GPU user with CUDA torch already in the venv uses
#                       requirements/stack.txt)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${X3D_VENV:-$root/.venv}
reqs=${X3D_REQUIREMENTS:-$root/requirements/cpu.txt}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
stamp="$venv/.x3d_plugin_installed"
want=$(cat "$reqs" "$root"/requirements/*.txt "$root/setup.cfg" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "[setup] installing $(basename "$reqs") + tests into $venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip 'setuptools>=77.0.3,<81' wheel
"${pip[@]}" install -r "$reqs" -r "$root/requirements/tests.txt"
"${pip[@]}" install --no-deps --no-build-isolation -e "$root"
"$venv/bin/python" -c "import x3d_plugin, mmaction.models; print('[setup] x3d_plugin', x3d_plugin.__version__, 'ready')"
echo "$want" > "$stamp"
