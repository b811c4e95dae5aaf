"""Test doubles for the trio runtime (no real sockets, no real time)."""
