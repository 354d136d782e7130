"""Hostile input at scale: structure-aware hypothesis fuzzers, one module per format.

Run them with the test command (the ``ci`` profile) or, for a long local run::

    HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz -q

See docs/security.md.
"""
