"""``tokend.config``: settings from TOKEND_* environment variables, and the system secret."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from tokend.config import (
    DEFAULT_DATABASE_URL,
    MissingSecretKey,
    Settings,
    load_or_create_secret,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOKEND_"):
            monkeypatch.delenv(name)


def test_defaults_match_design() -> None:
    s = Settings()
    assert s.database_url == DEFAULT_DATABASE_URL == "sqlite:///./tokend.db"
    assert s.issuer is None
    assert s.effective_issuer == "http://127.0.0.1:8000"
    assert (
        s.access_token_ttl,
        s.client_credentials_ttl,
        s.refresh_token_ttl,
        s.refresh_token_idle_ttl,
        s.refresh_reuse_grace,
    ) == (3600, 86400, 2592000, 1209600, 10)
    assert s.signing_alg == "RS256"
    assert s.secret_key is None
    assert s.gc_interval == 0  # no sweep unless asked for


def test_env_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "TOKEND_ISSUER": "https://auth.example.com/",
        "TOKEND_DATABASE_URL": "postgresql://u@db:5432/tokend",
        "TOKEND_ACCESS_TOKEN_TTL": "60",
        "TOKEND_CLIENT_CREDENTIALS_TTL": "120",
        "TOKEND_REFRESH_TOKEN_TTL": "7200",
        "TOKEND_REFRESH_TOKEN_IDLE_TTL": "3600",
        "TOKEND_REFRESH_REUSE_GRACE": "0",
        "TOKEND_SIGNING_ALG": "EdDSA",
        "TOKEND_SECRET_KEY": "s" * 40,
        "TOKEND_HOST": "0.0.0.0",
        "TOKEND_PORT": "9000",
        "TOKEND_ACCESS_TOKEN_AUDIENCE": "https://api.example.com",
        "TOKEND_GC_INTERVAL": "300",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.issuer == "https://auth.example.com"  # trailing slash dropped
    assert s.effective_issuer == "https://auth.example.com"
    assert s.database_url == "postgresql://u@db:5432/tokend"
    assert s.signing_alg == "EdDSA"
    assert (s.host, s.port) == ("0.0.0.0", 9000)
    assert s.gc_interval == 300
    assert s.resolve_secret_key() == "s" * 40
    p = s.policy()
    assert p.issuer == "https://auth.example.com"
    assert (
        p.access_token_ttl,
        p.client_credentials_ttl,
        p.refresh_token_ttl,
        p.refresh_idle_ttl,
        p.refresh_reuse_grace,
        p.audience,
    ) == (60, 120, 7200, 3600, 0, "https://api.example.com")
    assert s.key_retention == 120 + 3600


@pytest.mark.parametrize(("value", "required"), [(None, False), ("off", False), ("on", True)])
def test_dpop_nonce_setting_reaches_the_policy(
    monkeypatch: pytest.MonkeyPatch, value: str | None, required: bool
) -> None:
    """TOKEND_DPOP_NONCE=on: every client's DPoP proofs need a server nonce."""
    monkeypatch.delenv("TOKEND_DPOP_NONCE", raising=False)
    if value is not None:
        monkeypatch.setenv("TOKEND_DPOP_NONCE", value)
    assert Settings().policy().dpop_nonce is required


def test_dpop_nonce_setting_is_off_or_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_DPOP_NONCE", "client")
    with pytest.raises(ValueError):
        Settings()


def test_log_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text at info by default; json and the levels in any case; never uvicorn's "trace",
    which logs every request's headers (Authorization, Cookie)."""
    s = Settings()
    assert (s.log_format, s.log_level) == ("text", "info")
    monkeypatch.setenv("TOKEND_LOG_FORMAT", "JSON")
    monkeypatch.setenv("TOKEND_LOG_LEVEL", "Debug")
    assert (Settings().log_format, Settings().log_level) == ("json", "debug")
    for name, value in (("TOKEND_LOG_LEVEL", "trace"), ("TOKEND_LOG_FORMAT", "logfmt")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError):
            Settings()
        monkeypatch.delenv(name)


def test_issuer_defaults_to_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_HOST", "10.0.0.1")
    monkeypatch.setenv("TOKEND_PORT", "8443")
    assert Settings().effective_issuer == "http://10.0.0.1:8443"


def test_explicit_arguments_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_DATABASE_URL", "sqlite:///from-env.db")
    assert Settings(database_url="sqlite:///arg.db").database_url == "sqlite:///arg.db"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKEND_SIGNING_ALG", "HS256"),
        ("TOKEND_SIGNING_ALG", "none"),
        ("TOKEND_ACCESS_TOKEN_TTL", "0"),
        ("TOKEND_ACCESS_TOKEN_TTL", "soon"),
        ("TOKEND_REFRESH_TOKEN_TTL", "-1"),
        ("TOKEND_REFRESH_REUSE_GRACE", "-1"),
        ("TOKEND_REFRESH_REUSE_GRACE", "301"),
        ("TOKEND_REFRESH_GRACE_RETRIES", "0"),
        ("TOKEND_PORT", "70000"),
        ("TOKEND_GC_INTERVAL", "-1"),
    ],
)
def test_invalid_env_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


# -- the system secret ----------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_secret_file_created_0600_and_reused(tmp_path: Path) -> None:
    db = tmp_path / "data" / "tokend.db"
    s = Settings(database_url=f"sqlite:///{db}")
    secret = s.resolve_secret_key()
    path = Path(f"{db}.secret")
    assert path.is_file()
    assert _mode(path) == 0o600
    assert len(secret) >= 32
    assert path.read_text().strip() == secret
    assert Settings(database_url=f"sqlite:///{db}").resolve_secret_key() == secret
    assert [p.name for p in path.parent.iterdir()] == ["tokend.db.secret"]  # no temp files left
    # Another database gets another secret.
    other = Settings(database_url=f"sqlite:///{tmp_path / 'other.db'}").resolve_secret_key()
    assert other != secret


def test_secret_file_mode_ignores_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_secret(tmp_path / "x.secret")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "x.secret") == 0o600


def test_relative_sqlite_url_puts_secret_beside_db(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    secret = Settings().resolve_secret_key()  # default sqlite:///./tokend.db
    assert (tmp_path / "tokend.db.secret").read_text().strip() == secret


def test_env_secret_wins_over_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TOKEND_SECRET_KEY", "e" * 32)
    s = Settings(database_url=f"sqlite:///{tmp_path / 't.db'}")
    assert s.resolve_secret_key() == "e" * 32
    assert not (tmp_path / "t.db.secret").exists()


def test_existing_short_secret_file_refused(tmp_path: Path) -> None:
    (tmp_path / "t.db.secret").write_text("short\n")
    with pytest.raises(MissingSecretKey):
        Settings(database_url=f"sqlite:///{tmp_path / 't.db'}").resolve_secret_key()


def _race_threads(path: Path, n: int) -> list[str]:
    barrier = threading.Barrier(n)
    values: list[str] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            barrier.wait()
            values.append(load_or_create_secret(path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return values


def test_concurrent_creation_threads(tmp_path: Path) -> None:
    for round_ in range(5):
        path = tmp_path / f"r{round_}.secret"
        values = _race_threads(path, 16)
        assert len(values) == 16 and len(set(values)) == 1
        assert path.read_text().strip() == values[0]
        assert _mode(path) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _child(path: str, barrier, queue) -> None:  # type: ignore[no-untyped-def]
    barrier.wait()
    try:
        queue.put(load_or_create_secret(Path(path)))
    except BaseException as exc:  # pragma: no cover - reported by the parent
        queue.put(f"error: {exc!r}")


def test_concurrent_creation_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    n = 8
    path = tmp_path / "p.db.secret"
    barrier = ctx.Barrier(n)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(str(path), barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    values = [queue.get(timeout=30) for _ in range(n)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(set(values)) == 1, values
    assert not values[0].startswith("error")
    assert path.read_text().strip() == values[0]
    assert _mode(path) == 0o600


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@db:5432/tokend",
        "postgresql+psycopg://u@db/tokend",
        "sqlite://",
        "sqlite:///:memory:",
    ],
)
def test_secret_required_without_a_database_file(url: str) -> None:
    with pytest.raises(MissingSecretKey, match="TOKEND_SECRET_KEY"):
        Settings(database_url=url).resolve_secret_key()


def test_postgres_with_secret_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_SECRET_KEY", "p" * 48)
    assert Settings(database_url="postgresql://u@db/t").resolve_secret_key() == "p" * 48


@pytest.mark.parametrize("length", [1, 16, 31])
def test_short_secret_refused(tmp_path: Path, monkeypatch, length: int) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TOKEND_SECRET_KEY", "x" * length)
    for url in (f"sqlite:///{tmp_path / 't.db'}", "postgresql://u@db/t"):
        with pytest.raises(MissingSecretKey, match="32"):
            Settings(database_url=url).resolve_secret_key()
    assert not (tmp_path / "t.db.secret").exists()  # no silent fallback to a file


def test_32_character_secret_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_SECRET_KEY", "y" * 32)
    assert Settings(database_url="postgresql://u@db/t").resolve_secret_key() == "y" * 32


def test_a_database_url_option_the_server_driver_cannot_honour_is_refused_at_start() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url="postgresql://tokend:s3cr3t-pw@db/tokend?keepalives=1")
    assert "keepalives" in str(refused.value)
    assert "s3cr3t-pw" not in str(refused.value)
    # What it can honour passes, and SQLite URLs are not asyncpg's business.
    Settings(database_url="postgresql://db/tokend?sslmode=require&connect_timeout=5")
    Settings(database_url="sqlite:///tokend.db?keepalives=1")
