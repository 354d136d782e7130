#!/usr/bin/env bash
# Build the C scanners (csrc/scan.c) with AddressSanitizer and UndefinedBehaviorSanitizer
# into a temporary directory and run the scanner tests against that build only.
#
#   bash scripts/sanitize.sh [pytest args...]     (default: tests/test_scan.py)
#
# Any ASan or UBSan report fails the run: UBSan is built without recovery and told to halt.
# Needs gcc with libasan/libubsan (Debian: gcc, which pulls them in) and the test
# dependencies (pytest, hypothesis, cffi) in the Python used: .venv/bin/python when it
# exists, else python3 (override with PYTHON=...).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS

PY=${PYTHON:-}
if [[ -z $PY ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
CC=${CC:-gcc}
libasan=$("$CC" -print-file-name=libasan.so)
if [[ ! -e $libasan ]]; then
    echo "scripts/sanitize.sh: $CC has no libasan.so (install gcc's sanitizer runtimes)" >&2
    exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# A private copy of the package, so that the instrumented module is the one imported
# whatever is installed: PYTHONPATH comes before site-packages and editable installs.
cp -r src/imageintrospect "$out/"
find "$out/imageintrospect" -name '_scan_c*.so' -delete

echo "==> building imageintrospect._scan_c with -fsanitize=address,undefined"
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# -fno-wrapv undoes Python's -fwrapv, so signed overflow would be reported too.
CC=$CC CFLAGS="$sanitize -fno-wrapv -g -O1" LDFLAGS="$sanitize" \
    "$PY" src/_cffi_src/build_scan.py "$out" >"$out/build.log" 2>&1 || {
    cat "$out/build.log" >&2
    exit 1
}

export PYTHONPATH="$out${PYTHONPATH:+:$PYTHONPATH}"
export IMAGEINTROSPECT_BACKEND=c
export PYTHONMALLOC=malloc # every object its own allocation: ASan sees reads past a buffer
# verify_asan_link_order=0: Python subprocesses of the tests load the instrumented module
# without the preload (which is dropped for them, see below).
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:verify_asan_link_order=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

module=$(LD_PRELOAD=$libasan "$PY" -c 'import imageintrospect.scan._c as c; print(c._ext.__file__)')
case $module in
"$out"/*) echo "==> testing $module" ;;
*)
    echo "scripts/sanitize.sh: imported $module instead of the instrumented build" >&2
    exit 1
    ;;
esac

((${#@})) || set -- tests/test_scan.py
# The ASan runtime is preloaded into pytest only: the tools the tests run (qemu-img, qemu-io,
# gcc) must not inherit it (qemu-img hangs under it), so the variable is dropped at start-up.
run_pytest='import os, sys, pytest; os.environ.pop("LD_PRELOAD", None); sys.exit(pytest.main(sys.argv[1:]))'
# --capture=sys: a sanitizer writes its report to file descriptor 2 and then kills the
# process, so pytest must not be holding that descriptor's output back.
status=0
LD_PRELOAD=$libasan timeout 1200 "$PY" -c "$run_pytest" -q -p no:cacheprovider --capture=sys "$@" ||
    status=$?
echo "==> sanitizer run finished in $((SECONDS - started)) s (exit $status)"
exit "$status"
