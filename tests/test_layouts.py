"""The generated layouts (``imageintrospect._layouts``) and the construct schemas they come
from: the module is what the generator makes of today's schemas, and the header paths of the
common formats never import construct (docs/hacking.md).  tests/fuzz/test_layouts_two_way.py
checks each layout's parse against construct's on real and random bytes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import construct
import pytest

from imageintrospect import _layouts
from imageintrospect.formats import luks, qcow2, qed, schemas, vhd
from imageintrospect.formats.vmdk import layout as vmdk_layout
from imageintrospect.structs import Layout
from tests.support import qemu_io

ROOT = Path(__file__).resolve().parent.parent


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_layouts", ROOT / "scripts/gen_layouts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_module_is_up_to_date() -> None:
    text = generator().render()
    assert text == (ROOT / "src/imageintrospect/_layouts.py").read_text(), (
        "src/imageintrospect/_layouts.py differs from the schemas: run scripts/gen_layouts.py"
    )


def test_every_schema_has_its_layout() -> None:
    derived = {v.source for v in vars(_layouts).values() if isinstance(v, Layout)}
    for short in schemas.MODULES:
        module = importlib.import_module(f"imageintrospect.formats.schemas.{short}")
        for name, value in vars(module).items():
            if isinstance(value, construct.Struct):
                assert f"{module.__name__}:{name}" in derived
                layout = getattr(_layouts, f"{short.upper()}_{name}")
                assert layout.schema is value
                assert layout.size == value.sizeof()


def test_generator_refuses_what_struct_cannot_read() -> None:
    gen = generator()
    for schema in (
        construct.Struct("n" / construct.PascalString(construct.Byte, "ascii")),
        construct.Struct("b" / construct.Bytes(construct.this.n)),
        construct.Struct("a" / construct.Array(2, construct.Struct("x" / construct.Int8ub))),
    ):
        with pytest.raises(gen.Refused):
            gen.Emitter().struct("m:X", "X", schema)


def test_schema_constants_agree_with_the_format_modules() -> None:
    assert schemas.qcow2.MAGIC == qcow2.MAGIC
    assert schemas.qed.MAGIC == qed.MAGIC
    assert schemas.luks.MAGIC == luks.MAGIC
    assert schemas.vmdk.SPARSE_MAGIC == vmdk_layout.SPARSE_MAGIC
    assert schemas.vmdk.COWD_MAGIC == vmdk_layout.COWD_MAGIC
    assert schemas.vhd.LOCATOR_COUNT == vhd.LOCATOR_COUNT


# What `imageintrospect info` has imported by the time it answered.
CHILD = """
import contextlib, io, json, sys
from imageintrospect.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    status = main(["info", "--output", "json", sys.argv[1]])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""

#: kind → (qemu-img format and options, the format modules the run may import)
IMAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "qcow2": (("qcow2",), ("qcow2",)),
    "vmdk-sparse": (("vmdk",), ("vmdk",)),
    "vmdk-stream": (("vmdk", "-o", "subformat=streamOptimized"), ("vmdk",)),
    "vhd": (("vpc",), ("vhd",)),
    "vhdx": (("vhdx",), ("vhdx",)),
    "vdi": (("vdi",), ("vdi",)),
    "raw": (("raw",), ("raw", "partitions")),
}
SHARED = ("base", "blocktables")


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_info_imports_no_construct_nor_other_formats(
    kind: str, make_image: Callable[..., Path]
) -> None:
    (fmt, *options), own = IMAGES[kind]
    path = make_image(fmt, "16M", *options)
    if kind != "vmdk-stream":  # qemu cannot write into a streamOptimized image
        qemu_io(path, fmt, "write -P 7 0 1M")
    run = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["status"] == 0
    modules: list[str] = answer["modules"]
    assert [m for m in modules if m == "construct" or m.startswith("construct.")] == []
    formats = {m.split(".")[2] for m in modules if m.startswith("imageintrospect.formats.")}
    assert formats <= {*own, *SHARED}, formats
    assert "imageintrospect.formats.schemas" not in modules
    assert "imageintrospect.audit.cli" not in modules  # the audit's arguments: audit only
    # a stream's marker walker loads for streams only (about 4 ms of importing saved)
    walker = "imageintrospect.formats.vmdk.markers"
    assert (walker in modules) == (kind == "vmdk-stream"), kind
