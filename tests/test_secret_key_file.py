"""``TOKEND_SECRET_KEY_FILE`` (a container secret) and the warning `tokend serve` gives when an
https issuer runs on the secret generated beside the SQLite database (issue 10, §5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tokend import cli
from tokend.config import MissingSecretKey, Settings

SECRET = "k" * 48
PG = "postgresql://u@db:5432/tokend"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOKEND_SECRET_KEY", "TOKEND_SECRET_KEY_FILE", "TOKEND_ISSUER"):
        monkeypatch.delenv(name, raising=False)


def secret_file(tmp_path: Path, content: bytes | str, mode: int = 0o400) -> Path:
    path = tmp_path / "tokend_secret"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (SECRET, SECRET),
        (SECRET + "\n", SECRET),  # `echo ... > file`
        (SECRET + "\r\n", SECRET),
        (SECRET + "\n\n", SECRET + "\n"),  # one newline only: the rest is the secret's
        (" " + SECRET + " \n", " " + SECRET + " "),
    ],
    ids=["bare", "newline", "crlf", "two-newlines", "spaces-kept"],
)
def test_the_file_holds_the_secret(tmp_path: Path, content: str, expected: str) -> None:
    path = secret_file(tmp_path, content)
    assert Settings(database_url=PG, secret_key_file=path).resolve_secret_key() == expected


def test_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = secret_file(tmp_path, SECRET + "\n")
    monkeypatch.setenv("TOKEND_SECRET_KEY_FILE", str(path))
    s = Settings(database_url=f"sqlite:///{tmp_path / 't.db'}")
    assert s.resolve_secret_key() == SECRET
    assert not (tmp_path / "t.db.secret").exists()  # nothing generated beside the database


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o440, 0o444, 0o644])
def test_readable_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    """Docker mounts secrets 0444 and Kubernetes 0644: readable by the container's users."""
    path = secret_file(tmp_path, SECRET, mode)
    assert Settings(database_url=PG, secret_key_file=path).resolve_secret_key() == SECRET


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o602, 0o777])
def test_a_file_anyone_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, SECRET, mode)
    with pytest.raises(MissingSecretKey, match=r"writable by every user.*chmod o-w"):
        Settings(database_url=PG, secret_key_file=path).resolve_secret_key()


def test_a_symlinked_secret_is_followed(tmp_path: Path) -> None:
    """A Kubernetes secret volume: the file is a symlink into ..data/."""
    target = secret_file(tmp_path, SECRET + "\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert Settings(database_url=PG, secret_key_file=link).resolve_secret_key() == SECRET


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("\n", "is empty"),
        ("\r\n", "is empty"),
        ("short\n", "at least 32 characters"),
        (b"\xff" * 40, "not UTF-8"),
        ("k" * 5000, "larger than 4096 bytes"),
    ],
    ids=["empty", "newline-only", "crlf-only", "short", "not-utf8", "huge"],
)
def test_unusable_files_are_refused_clearly(tmp_path: Path, content: str, message: str) -> None:
    path = secret_file(tmp_path, content)
    with pytest.raises(MissingSecretKey, match=message) as err:
        Settings(database_url=PG, secret_key_file=path).resolve_secret_key()
    assert f"TOKEND_SECRET_KEY_FILE={path}" in str(err.value)
    assert "k" * 40 not in str(err.value)  # never the content


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MissingSecretKey, match="cannot be read"):
        Settings(database_url=PG, secret_key_file=tmp_path / "nope").resolve_secret_key()
    with pytest.raises(MissingSecretKey, match=r"cannot be read|not a regular file"):
        Settings(database_url=PG, secret_key_file=tmp_path).resolve_secret_key()


def test_both_settings_at_once_are_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = secret_file(tmp_path, SECRET)
    monkeypatch.setenv("TOKEND_SECRET_KEY", "e" * 40)
    monkeypatch.setenv("TOKEND_SECRET_KEY_FILE", str(path))
    with pytest.raises(MissingSecretKey, match="not both"):
        Settings(database_url=PG).resolve_secret_key()


def test_an_empty_variable_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEND_SECRET_KEY_FILE", "")
    assert Settings(database_url=PG).secret_key_file is None
    with pytest.raises(MissingSecretKey, match="TOKEND_SECRET_KEY_FILE is required"):
        Settings(database_url=PG).resolve_secret_key()


def test_the_cli_reports_a_bad_file_in_one_line(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET, 0o666)
    r = CliRunner().invoke(
        cli.main,
        ["keys", "list", "--database-url", f"sqlite:///{tmp_path / 't.db'}"],
        env={"TOKEND_SECRET_KEY_FILE": str(path), "TOKEND_SECRET_KEY": None},
    )
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    assert "writable by every user" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


# -- the startup warning ------------------------------------------------------------------------


def test_warning_for_an_https_issuer_on_the_generated_secret(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    s = Settings(database_url=f"sqlite:///{db}", issuer="https://auth.example.com")
    [warning] = s.startup_warnings()
    assert f"{db}.secret" in warning and "TOKEND_SECRET_KEY_FILE" in warning


@pytest.mark.parametrize(
    "overrides",
    [
        {"issuer": "http://127.0.0.1:8000"},  # a development set-up
        {"issuer": None},  # http://HOST:PORT
        {"issuer": "https://auth.example.com", "secret_key": "s" * 40},
        {"issuer": "https://auth.example.com", "secret_key_file": "FILE"},
        {"issuer": "https://auth.example.com", "database_url": PG, "secret_key": "s" * 40},
    ],
    ids=["http", "default", "secret-key", "secret-key-file", "postgres"],
)
def test_no_warning_otherwise(tmp_path: Path, overrides: dict[str, str | None]) -> None:
    settings = {"database_url": f"sqlite:///{tmp_path / 't.db'}", **overrides}
    if settings.get("secret_key_file") == "FILE":
        settings["secret_key_file"] = str(secret_file(tmp_path, SECRET))
    assert Settings(**settings).startup_warnings() == []  # type: ignore[arg-type]


def test_serve_says_it_once_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    started: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.append(kw))
    url = f"sqlite:///{tmp_path / 't.db'}"
    exported = ("TOKEND_DATABASE_URL", "TOKEND_HOST", "TOKEND_PORT", "TOKEND_ISSUER")
    for name in exported:  # serve exports these for its workers: have monkeypatch undo that
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)

    def serve(*args: str) -> str:
        r = CliRunner().invoke(cli.main, ["serve", "--database-url", url, *args])
        assert r.exit_code == 0, (r.stderr, r.exception)
        for name in exported:
            monkeypatch.delenv(name, raising=False)
        return r.stderr

    err = serve("--issuer", "https://auth.example.com", "--workers", "2")
    assert started[-1]["workers"] == 2
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, err  # once, not once per worker
    assert f"{tmp_path / 't.db'}.secret" in warnings[0]
    # An http issuer (development): nothing to warn about.
    assert "WARNING" not in serve()
