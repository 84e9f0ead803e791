"""Interop tests against the real Codex CLI (see harness.py)."""
