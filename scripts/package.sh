#!/usr/bin/env bash
# Packaging check: build the sdist and the wheel as a release would, install each into a fresh
# virtualenv and run the command line on the example image there.
#
#   bash scripts/package.sh        (scripts/test.sh runs it; needs .venv with `build`)
#
# - the wheel must be tagged cp310-abi3 and run on the C backend;
# - the sdist is installed with no working compiler (CC=false): it must still install, run on
#   the pure-Python twin, say so in --version, and warn once on standard error.
# Both run from outside the source tree, so only the installed package can be imported.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
PY=${PY:-$root/.venv/bin/python}
example=$root/examples/buslogic-stream.vmdk
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
    echo "scripts/package.sh: $*" >&2
    exit 1
}

"$PY" -m build --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; fail "python -m build failed"; }
sdist=$(echo "$work"/dist/*.tar.gz)
wheel=$(echo "$work"/dist/*.whl)
echo "built $(basename "$sdist") and $(basename "$wheel")"
[[ $wheel == *-cp310-abi3-*.whl ]] || fail "the wheel is not tagged cp310-abi3: $wheel"
listing=$(tar tzf "$sdist")
for needed in LICENSE src/_cffi_src/build_scan.py csrc/scan.c csrc/scan.h tests/conftest.py \
    tests/support/__init__.py \
    docs/index.rst examples/buslogic-stream.vmdk; do
    grep -qx "imageintrospect-[^/]*/$needed" <<<"$listing" || fail "the sdist lacks $needed"
done

# smoke ENV BACKEND: the installed CLI on the example image, from outside the source tree.
smoke() {
    local env=$1 backend=$2 version out
    version=$(cd "$work" && "$env/bin/imageintrospect" --version)
    echo "$version"
    [[ $version == *"(backend: $backend"* ]] || fail "$env: expected the $backend backend"
    out=$(cd "$work" && "$env/bin/imageintrospect" check "$example" 2>"$env.stderr") ||
        fail "$env: check of the example failed: $out $(cat "$env.stderr")"
    [[ $out == *": safe (vmdk)" ]] || fail "$env: unexpected verdict: $out"
}

"$PY" -m venv "$work/wheel-env"
"$work/wheel-env/bin/pip" install -q --disable-pip-version-check "$wheel"
smoke "$work/wheel-env" c
[[ ! -s $work/wheel-env.stderr ]] || fail "the wheel printed: $(cat "$work/wheel-env.stderr")"

"$PY" -m venv "$work/sdist-env"
# CC=false: every compiler call fails, as on a machine without gcc. --no-binary: build the
# sdist here, never take a wheel from a cache.
CC=false "$work/sdist-env/bin/pip" install -q --disable-pip-version-check \
    --no-binary imageintrospect --no-cache-dir "$sdist" >"$work/sdist.log" 2>&1 ||
    { cat "$work/sdist.log" >&2; fail "the sdist did not install without a compiler"; }
smoke "$work/sdist-env" python
grep -q "^imageintrospect: warning: .*pure-Python backend" "$work/sdist-env.stderr" ||
    fail "no warning about the pure-Python backend on stderr"
[[ $(wc -l <"$work/sdist-env.stderr") -eq 1 ]] || fail "more than one line on stderr"
# The sdist's own tests run against what it installed (its helpers and docs included).
"$work/sdist-env/bin/pip" install -q --disable-pip-version-check pytest hypothesis
tar xzf "$sdist" -C "$work"
(cd "$work"/imageintrospect-*/ &&
    "$work/sdist-env/bin/python" -m pytest -q -p no:cacheprovider tests/test_docs.py \
        tests/test_cli_io.py -k "readme or version or fallback or type_error") ||
    fail "the sdist's tests fail against the installed package"
echo "packaging: sdist and wheel install and run"
