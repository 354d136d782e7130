#!/usr/bin/env bash
# The benchmark command: header-level introspect() against oslo.utils' format_inspector on
# the same images, in one run, with a closing ratio table (see docs/performance.md).
#
#   bash scripts/bench.sh                 # every image
#   bash scripts/bench.sh -k qcow2        # extra arguments go to pytest
#
# Uses the virtualenv scripts/test.sh makes (.venv), creating it when missing. Benchmarks
# are not part of scripts/test.sh: pyproject's testpaths is tests/ only.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

# -- the tools that make the benchmark images -----------------------------------------------
missing=()
{ command -v qemu-img && command -v qemu-io; } >/dev/null || missing+=(qemu-utils)
command -v xorriso >/dev/null || missing+=(xorriso)
command -v sgdisk >/dev/null || missing+=(gdisk)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "scripts/bench.sh: needs ${missing[*]} (run it as root, or apt-get install them)" >&2
        exit 1
    fi
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# -- Python environment: the same .venv as scripts/test.sh ----------------------------------
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    step "python3 -m venv .venv"
    rm -rf .venv
    python3 -m venv .venv
fi
PY=.venv/bin/python
# oslo.utils' format_inspector imports cryptography (for LUKS), which oslo only pulls in with
# its image-inspection extra; name it here until the bench extra does.
step "pip install -e .[bench] oslo.utils[image-inspection]"
"$PY" -m pip install -q --disable-pip-version-check -e '.[bench]' 'oslo.utils[image-inspection]'

# -- the run ----------------------------------------------------------------------------------
step "machine"
echo "nproc: $(nproc)"
echo "cpu:   $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "load:  $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; other work skews the figures)"
echo "$("$PY" --version)"
"$PY" -c 'from importlib.metadata import version as v
print("oslo.utils", v("oslo.utils"), "| pytest-benchmark", v("pytest-benchmark"))
try:
    import imageintrospect._scan_c  # noqa: F401 - the optional C table scanners (deep only)
    print("imageintrospect C scanners: built")
except ImportError:
    print("imageintrospect C scanners: not built (pure Python)")'

step "python -m pytest benchmarks --benchmark-only"
exec "$PY" -m pytest benchmarks --benchmark-only --benchmark-group-by=group \
    --benchmark-columns=min,median,iqr,rounds -q -p no:cacheprovider "$@"
