"""Tests against a real OpenID provider (npm ``oidc-provider``; see harness.py)."""
