"""The C and the pure-Python table scanners give the same answers on hostile input.

``imageintrospect.scan`` picks its backend once, at import, from ``IMAGEINTROSPECT_BACKEND``;
so a corpus drawn from the fuzz strategies is written to files and introspected by two
subprocesses, one per backend, and their answers compared input by input.  Skipped when the
scan package or its C backend is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from .seeds import Seed, every_seed
from .strategies import Mutant, mutants, pristine_or_cut, splices

BACKEND_ENV = "IMAGEINTROSPECT_BACKEND"
CORPUS_SIZE = 120
#: Inputs larger than this are left out to keep the comparison cheap.
LARGEST = 2 * 1024 * 1024

ANSWER_ALL = """
import json, sys
from pathlib import Path
import imageintrospect
from imageintrospect import scan
answers = {"backend": scan.backend, "answers": []}
for path in sorted(Path(sys.argv[1]).iterdir()):
    for deep in (True, False):
        try:
            answer = imageintrospect.introspect(path, deep=deep).to_dict()
        except imageintrospect.ImageIntrospectError as exc:
            answer = [type(exc).__name__, str(exc)]
        answers["answers"].append([path.name, deep, answer])
print(json.dumps(answers))
"""


def _scan_package_present() -> bool:
    return importlib.util.find_spec("imageintrospect.scan") is not None


def corpus(seeds: tuple[Seed, ...]) -> list[bytes]:
    """Inputs drawn (derandomised) from the mutation, cut and splice strategies."""
    small = tuple(s for s in seeds if len(s.data) <= LARGEST)
    drawn: list[bytes] = []

    @settings(
        max_examples=CORPUS_SIZE,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
    )
    @given(st.one_of(mutants(small), pristine_or_cut(small), splices(small, small)))
    def collect(mutant: Mutant) -> None:
        if len(mutant.data) <= LARGEST:
            drawn.append(mutant.data)

    collect()
    return drawn


def answers(directory: Path, backend: str) -> dict[str, object]:
    env = {**os.environ, BACKEND_ENV: backend}
    proc = subprocess.run(
        [sys.executable, "-c", ANSWER_ALL, str(directory)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0 and "are not available" in proc.stderr:
        pytest.skip(f"the {backend} backend is not built here")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout)
    assert result["backend"] == backend
    return result


@pytest.mark.skipif(not _scan_package_present(), reason="imageintrospect.scan is absent")
def test_c_and_python_backends_agree(tmp_path: Path) -> None:
    seeds = every_seed()
    if not seeds:
        pytest.skip("no seed image could be made")
    for index, data in enumerate(corpus(seeds)):
        (tmp_path / f"{index:04d}.img").write_bytes(data)
    c_answers = answers(tmp_path, "c")
    python_answers = answers(tmp_path, "python")
    differ = [
        (c[0], c[1])
        for c, p in zip(c_answers["answers"], python_answers["answers"], strict=True)  # type: ignore[call-overload]
        if c != p
    ]
    assert not differ, f"the backends disagree on (input, deep): {differ[:10]} in {tmp_path}"
