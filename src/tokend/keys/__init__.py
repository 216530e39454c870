"""Signing keys: generation, encryption at rest, rotation, JWKS and JWT signing."""

from tokend.keys.ring import SUPPORTED_ALGS, KeyRing

__all__ = ["SUPPORTED_ALGS", "KeyRing"]
