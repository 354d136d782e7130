"""The regression corpus: inputs that once broke a property, replayed on every run.

Add a file to tests/fuzz/corpus/ whenever a fuzzer finds something (the oracle saves each
failing input under $IMAGEINTROSPECT_FUZZ_FAILURES); every file must pass the same oracle as
the fuzzers' examples, with every deep/chunk combination."""

from __future__ import annotations

from pathlib import Path

import pytest

from .properties import CHUNK_SIZES, check

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(p for p in CORPUS.iterdir() if p.is_file()) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
@pytest.mark.parametrize("deep", [True, False])
def test_corpus_file(path: Path, deep: bool) -> None:
    data = path.read_bytes()
    for chunk in CHUNK_SIZES:
        check(data, deep=deep, chunk=chunk)
