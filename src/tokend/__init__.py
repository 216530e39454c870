"""tokend: a small, fast, correct OpenID Connect / OAuth 2.0 token service."""

__version__ = "0.1.0"
