"""The construct schemas: the one documented layout of every on-disk structure.

Nothing on a header path imports these modules (construct's import alone costs several times
the interpreter's start): ``scripts/gen_layouts.py`` derives from every ``construct.Struct``
here a ``structs.Layout`` in the generated ``imageintrospect._layouts``, which the format
modules parse with.  ``tests/test_layouts.py`` checks both agree.  A structure that needs
construct's interpretation (a variable size) is parsed with construct where it is used.
"""

#: The schema modules, in the order the generated module lists them.
MODULES = ("qcow2", "qed", "luks", "vhdx", "vdi", "vmdk", "vhd", "iso", "ova", "partitions")
