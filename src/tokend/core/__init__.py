"""The pure domain of tokend: no HTTP, no SQL (see README.md in this folder)."""
