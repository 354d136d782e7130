#!/usr/bin/env bash
# The benchmark command, with closing ratio tables (see docs/performance.md):
#   header: header-level introspect() against oslo.utils' format_inspector;
#   deep:   deep introspect() against qemu-img check/map, C scanners against the Python twin,
#           table scanning against plain reads of the same bytes;
#   stream: plain read loop against InspectingReader and oslo's InspectWrapper;
#   startup: process start of import and `imageintrospect info` against `qemu-img info`.
#   audit:  imageintrospect audit of 10,000 small images on moto's S3 server (header-only and
#           deep, 1 and 2 Dask workers) against downloading each whole
#           (benchmarks/audit_bench.py; IMAGEINTROSPECT_BENCH_AUDIT_IMAGES=N for another count).
#
#   bash scripts/bench.sh                 # all three
#   bash scripts/bench.sh deep            # one of them (header, deep, stream)
#   bash scripts/bench.sh deep -k qcow2   # extra arguments go to pytest
#
# The deep and stream images are big (a 1 TiB qcow2 with preallocated L2 tables, 4 GiB and
# 1 GiB random-data streamOptimized VMDKs...): they are built once into
# $IMAGEINTROSPECT_BENCH_CACHE (default ~/.cache/imageintrospect-bench, about 11 GiB, plus
# 4 GiB of scratch while building; a few minutes on two cores) and reused.
# IMAGEINTROSPECT_BENCH_STREAM_GIB=1 shrinks the 4 GiB VMDKs.
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
qemu-img --version | head -1
if git rev-parse --git-dir >/dev/null 2>&1; then
    dirty=""
    git diff --quiet HEAD -- src 2>/dev/null || dirty=" + uncommitted changes in src/"
    echo "code: $(git rev-parse --short HEAD)$dirty"
fi
"$PY" -c 'from importlib.metadata import version as v
print("oslo.utils", v("oslo.utils"), "| pytest-benchmark", v("pytest-benchmark"))
try:
    import imageintrospect._scan_c  # noqa: F401 - the optional C table scanners (deep only)
    print("imageintrospect C scanners: built")
except ImportError:
    print("imageintrospect C scanners: not built (pure Python)")'

if [[ ${1:-} == audit ]]; then
    step "pip install -e .[audit,integration]"
    "$PY" -m pip install -q --disable-pip-version-check -e '.[audit,integration]'
    step "python benchmarks/audit_bench.py"
    exec "$PY" benchmarks/audit_bench.py
fi
targets=(benchmarks)
case "${1:-}" in
    header | deep | stream | startup)
        targets=("benchmarks/test_$1.py")
        shift
        ;;
esac
if [[ ${targets[0]} != benchmarks/test_header.py && ${targets[0]} != benchmarks/test_startup.py ]]; then
    cache=${IMAGEINTROSPECT_BENCH_CACHE:-$HOME/.cache/imageintrospect-bench}
    mkdir -p "$cache"
    echo "image cache: $cache ($(du -sh "$cache" | cut -f1) used, $(df -h --output=avail "$cache" | tail -1 | tr -d ' ') free)"
    step "build or reuse the deep/stream images"
    (cd benchmarks && PYTHONPATH=.. "../$PY" deep_images.py)
fi

step "python -m pytest ${targets[*]} --benchmark-only"
exec "$PY" -m pytest "${targets[@]}" --benchmark-only --benchmark-group-by=group \
    --benchmark-columns=min,median,iqr,rounds -q -p no:cacheprovider "$@"
