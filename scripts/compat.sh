#!/usr/bin/env bash
# The oslo.utils drop-in (imageintrospect.compat) against its peers' own tests, from the
# installed releases (docs/compat.md): oslo.utils' format-inspector tests, Glance's upload,
# import and image_conversion tests, Nova's image tests. Each prints its pass count; the tests
# docs/compat.md lists are deselected from that same table. Run by scripts/test.sh once, with
# the C backend (about 3 minutes on two busy cores); needs the integration extra.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
PY=${PY:-$repo/.venv/bin/python}
export IMAGEINTROSPECT_BACKEND=${IMAGEINTROSPECT_BACKEND:-c}
status=0

has() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

echo "-- oslo.utils: oslo_utils.tests.imageutils.test_format_inspector"
# oslo's LUKS fixture (qemu-img create -f luks) can fail on a loaded machine while qemu times
# its key derivation (docs/compat.md): only a test failing in that very command is run again.
"$PY" -m pytest -q -p no:cacheprovider -p tests.compat.oslo_plugin \
    --reruns 2 --only-rerun "'qemu-img', 'create', '-f', 'luks'" \
    --pyargs oslo_utils.tests.imageutils.test_format_inspector || status=1

# Glance's and Nova's tests find their fixtures relative to the installed package's parent.
site=$("$PY" -c 'import oslo_utils, os; print(os.path.dirname(os.path.dirname(oslo_utils.__file__)))')
if has glance; then
    echo "-- Glance: upload path, import flow, image_conversion"
    (cd "$site" && PYTHONPATH=$repo "$PY" -m pytest -c /dev/null --rootdir . -q \
        -p no:cacheprovider -p tests.compat.oslo_plugin \
        glance/tests/unit/test_store_image.py \
        glance/tests/unit/async_/flows/test_parallel_api_image_import.py \
        glance/tests/unit/async_/flows/plugins/test_image_conversion.py) || status=1
else
    echo "-- Glance not installed (integration extra): its tests not run" >&2
fi
if has nova; then
    echo "-- Nova: nova.virt.images, libvirt utils"
    (cd "$site" && PYTHONPATH=$repo "$PY" -W ignore -m tests.compat.run_unittest \
        nova.tests.unit.virt.test_images nova.tests.unit.virt.libvirt.test_utils) || status=1
else
    echo "-- Nova not installed (integration extra): its tests not run" >&2
fi
exit "$status"
