"""The fleet audit against real services on 127.0.0.1 (a package: its conftest is its own)."""
