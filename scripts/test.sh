#!/usr/bin/env bash
# THE test command: installs what the suite needs, then runs lint, type check, tests and docs.
#
#   bash scripts/test.sh        (as root; as another user, apt-get needs sudo if tools are missing)
#
# Works on a fresh Debian 12 with python3 and network to PyPI and Debian. Idempotent: apt is
# skipped when the tools are already there, and the virtualenv in .venv is reused.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS

step() { printf '\n==> %s\n' "$*"; }

# -- system tools the tests use as references and image makers ------------------------------
# qemu-img/qemu-io (qemu-utils), xorriso (ISO images), sgdisk (gdisk), mkfs.vfat (dosfstools).
need_apt=()
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
command -v qemu-io >/dev/null || need_apt+=(qemu-utils)
command -v xorriso >/dev/null || need_apt+=(xorriso)
command -v sgdisk >/dev/null || need_apt+=(gdisk)
command -v mkfs.vfat >/dev/null || need_apt+=(dosfstools)
# sfdisk (MBR disks), mkudffs (UDF discs), cryptsetup (LUKS1/LUKS2 made by the real tool).
command -v sfdisk >/dev/null || need_apt+=(fdisk)
command -v mkudffs >/dev/null || need_apt+=(udftools)
command -v cryptsetup >/dev/null || need_apt+=(cryptsetup-bin)
# mkisofs (genisoimage): oslo.utils' own ISO tests make their images with it (docs/compat.md).
command -v mkisofs >/dev/null || need_apt+=(genisoimage)
# A C compiler and Python's headers build the optional C scanners; without them the package
# still installs (pure Python), but the suite would not exercise the C path.
command -v cc >/dev/null || need_apt+=(gcc)
python3 -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need_apt+=(python3-dev)

apt_install() {
    step "apt-get install $*"
    if [[ $(id -u) -ne 0 ]]; then
        echo "scripts/test.sh: installing $* needs root (run it with sudo)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "$@"
}
if ((${#need_apt[@]})); then
    apt_install "${need_apt[@]}"
fi

# -- Python environment ---------------------------------------------------------------------
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    step "python3 -m venv .venv"
    rm -rf .venv
    if ! python3 -m venv .venv; then
        # Debian's own python3 needs python3-venv for ensurepip.
        rm -rf .venv
        apt_install python3-venv
        python3 -m venv .venv
    fi
fi
PY=.venv/bin/python
step "pip install -e .[test,docs,bench]"
# bench brings oslo.utils, whose QemuImgInfo must parse our qemu-json output.
"$PY" -m pip install -q --disable-pip-version-check -e '.[test,docs,bench]'
# integration: the real Glance (its functional-test harness) and the real Nova with its VMware
# driver, which tests/integration runs in process; they must not skip here.
# audit (with integration's moto): fsspec, s3fs, Dask, openstacksdk and moto's S3 server for
# tests/audit (real services on 127.0.0.1).
step "pip install -e .[test,docs,bench,integration,audit]"
"$PY" -m pip install -q --disable-pip-version-check -e '.[test,docs,bench,integration,audit]'
export IMAGEINTROSPECT_REQUIRE_INTEGRATION=1

export PATH="$PWD/.venv/bin:$PATH"
status=0
run() {
    step "$*"
    "$@" || { status=1; echo "FAILED: $*" >&2; }
}

# Every stage runs even when an earlier one fails, so one run shows every problem.
run ruff check .
run ruff format --check .
run mypy
# The whole suite once per backend (as python-zstandard and msgpack do): the C scanners,
# then their pure-Python twin.
run env IMAGEINTROSPECT_BACKEND=c python -m pytest tests -q -p no:cacheprovider
# tests/integration drives Glance and Nova, not the scanners, and tests/audit (S3, HTTP,
# Dask and Glance services; about two minutes) the audit's reading and distribution: the C
# run covers both.
run env IMAGEINTROSPECT_BACKEND=python python -m pytest tests -q -p no:cacheprovider \
    --ignore=tests/integration --ignore=tests/audit
# The oslo.utils drop-in against oslo's, Glance's and Nova's own tests (docs/compat.md): once,
# with the C backend, about 3 minutes (the integration extra brings those releases).
run bash scripts/compat.sh
# The C core built with AddressSanitizer and UBSan, its tests run against that build.
run bash scripts/sanitize.sh
# The sdist and the wheel built, each installed into a fresh virtualenv (the sdist without a
# compiler) and run on the example image.
run bash scripts/package.sh
run sphinx-build -q -E -W -b html docs docs/_build/html

step "done in $((SECONDS - started)) s"
if ((status)); then
    echo "scripts/test.sh: FAILED" >&2
fi
exit "$status"
