"""Storage: the SQLAlchemy implementation of ``tokend.core.ports.Store`` (``SqlStore``, in
``tokend.store.sqlstore``, made of the parts listed there), browser sessions and consents
(``accounts``), engines and migrations (``engine``, ``migrations``), the tables
(``schema``) and SQLite's WAL checkpointer (``checkpoint``)."""

from tokend.store.sqlstore import SqlStore

__all__ = ["SqlStore"]
