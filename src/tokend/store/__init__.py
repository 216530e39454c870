"""Storage: the SQLAlchemy implementation of ``tokend.core.ports.Store`` and its migrations."""
