#!/usr/bin/env bash
# Makes the Python environment the Mesos-API tests, examples/mesos-python/ and bench/mesos.sh
# run in: a venv (default tests/mesos/.venv, or $BRAMBLE_MESOS_VENV) holding pymesos 0.3.15,
# six and addict from PyPI, pinned with hashes, plus http-parser 0.9.0's pure-Python parser in
# <venv>/pure (see requirements.txt for why that one is not pip-installed). Use it as
#
#   PYTHONPATH=<venv>/pure <venv>/bin/python your_framework.py ...
#
# Used by .ci/run and by people alike. Does nothing when the venv is already complete for these
# pins (a stamp file records what it was made from), so a warm machine pays nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${BRAMBLE_MESOS_VENV:-$here/.venv}
stamp="$venv/.bramble-ready"
want=$(cat "$here/requirements.txt" "$here/http-parser.txt" | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

# Debian's python3 when there is one (python3-venv provides its ensurepip), else the PATH's.
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=python3; fi
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "setup-venv.sh: $python cannot make a venv (on Debian: apt-get install python3-venv)" >&2
  exit 1
fi

echo "setup-venv.sh: making $venv with $("$python" --version)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
# pymesos is an sdist: build it with the venv's own setuptools (--no-build-isolation) so
# nothing unpinned is fetched to build it.
"${pip[@]}" install --no-deps --no-build-isolation --require-hashes -r "$here/requirements.txt"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${pip[@]}" download --no-deps --no-binary :all: --no-build-isolation --require-hashes \
  -r "$here/http-parser.txt" -d "$tmp"
tar -xzf "$tmp"/http-parser-0.9.0.tar.gz -C "$tmp"
mkdir -p "$venv/pure"
cp -r "$tmp/http-parser-0.9.0/http_parser" "$venv/pure/"
# Without its C extension http_parser.http imports the pure-Python parser instead.
find "$venv/pure/http_parser" \( -name '*.c' -o -name '*.so' -o -name '*.pyx' \) -delete

# Prove it works before saying so.
PYTHONPATH="$venv/pure" "$venv/bin/python" - <<'PY'
from http_parser.http import HttpParser
from http_parser.pyparser import HttpParser as Pure
assert HttpParser is Pure, "http_parser still uses its C parser"
import pymesos, addict, six  # noqa: F401
from pymesos import MesosSchedulerDriver, MesosExecutorDriver  # noqa: F401
PY
echo "$want" >"$stamp"
echo "setup-venv.sh: ready: PYTHONPATH=$venv/pure $venv/bin/python" >&2
