"""The ``tokend`` command (DESIGN.md, "CLI contract"): JSON to stdout, one object per line;
messages to stderr. The contract shapes go through a real subprocess once (SQLite); the rest
uses click's CliRunner (SQLite; both backends where the SQL matters)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from click.testing import CliRunner, Result
from sqlalchemy import inspect

from tests.conftest import SECRET_KEY
from tokend.cli import main
from tokend.config import Settings
from tokend.core.client_auth import authenticate_client
from tokend.core.errors import InvalidClient, InvalidGrant
from tokend.core.models import ClientCredentials, TokenRequest
from tokend.core.secrets import CLIENT_SECRET_PREFIX, hash_secret, is_well_formed
from tokend.runtime import Runtime, build_runtime
from tokend.store.engine import create_db_engine

CONTRACT_KEYS = {"client_id", "client_secret", "grant_types", "redirect_uris", "scope"}
SECRET_RE = re.compile(r"^tkd_cs_[0-9A-Za-z]{43}[0-9A-Za-z]{6}$")
PASSWORD = "correct horse battery staple"


# -- helpers -----------------------------------------------------------------------------------


def lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    """Every stdout line is one JSON object."""
    out = []
    for line in text.splitlines():
        obj = json.loads(line)
        assert isinstance(obj, dict)
        out.append(obj)
    return out


class Cli:
    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Result:
        argv = list(args)
        if "--database-url" not in argv:
            argv += ["--database-url", self.url]
        return self.runner.invoke(
            main, argv, input=input, env={"TOKEND_SECRET_KEY": SECRET_KEY, **env}
        )

    def ok(self, *args: str, input: str | None = None, **env: str) -> list[dict]:  # type: ignore[type-arg]
        r = self(*args, input=input, **env)
        assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr, r.exception)
        return lines(r.stdout)

    def fails(self, *args: str, input: str | None = None, **env: str) -> Result:
        r = self(*args, input=input, **env)
        assert r.exit_code != 0, r.stdout
        # A handled error (click's exit), not a crash with a traceback.
        assert isinstance(r.exception, SystemExit), r.exception
        assert r.stdout == ""
        assert r.stderr.strip()
        assert "Traceback" not in r.stderr
        return r

    def client(self, *extra: str, scope: str = "openid offline email") -> dict:  # type: ignore[type-arg]
        [out] = self.ok(
            "clients",
            "create",
            "--name",
            "app",
            "--redirect-uri",
            "https://app.example/cb",
            "--grant-type",
            "authorization_code",
            "--grant-type",
            "refresh_token",
            "--scope",
            scope,
            "--json",
            *extra,
        )
        return out

    def user(self, name: str = "alice") -> dict:  # type: ignore[type-arg]
        [out] = self.ok("users", "create", name, "--password-stdin", input=PASSWORD + "\n")
        return out


def _runtime_over(url: str) -> Iterator[Runtime]:
    """A runtime over the CLI's database, on the real clock like the CLI."""
    runtime = build_runtime(
        Settings(database_url=url, secret_key=SECRET_KEY, issuer="https://i.test"), prepare=True
    )
    yield runtime
    runtime.close()


@pytest.fixture
def cli(tmp_path: Path, sqlite_template: Path) -> Cli:
    """The CLI on SQLite: its behaviour does not depend on the backend, and each invocation
    migrates and loads keys anew, so most tests run on one backend only. The database starts
    migrated (a copy of the run's template); ``blank_cli`` starts without tables."""
    shutil.copyfile(sqlite_template, tmp_path / "cli.db")
    return Cli(f"sqlite:///{tmp_path / 'cli.db'}")


@pytest.fixture
def crt(cli: Cli) -> Iterator[Runtime]:
    yield from _runtime_over(cli.url)


@pytest.fixture
def cli_any(db_url: str) -> Cli:
    """The CLI on every backend, for the commands whose SQL matters (cascades, set-based
    revocation)."""
    return Cli(db_url)


@pytest.fixture
def crt_any(cli_any: Cli) -> Iterator[Runtime]:
    yield from _runtime_over(cli_any.url)


def db_bytes(url: str) -> bytes:
    """Every byte SQLite has on disk for this database (main file, WAL, shared memory)."""
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


def refresh(rt: Runtime, client_id: str, secret: str | None, token: str):  # type: ignore[no-untyped-def]
    method = "none" if secret is None else "client_secret_basic"
    return rt.service.token(
        TokenRequest(
            params={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
            credentials=ClientCredentials(method, client_id, secret),
        )
    )


# -- its place among the layers ------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (function-level ones too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_cli_reaches_storage_only_through_the_runtime() -> None:
    """No store, engine or SQL in the CLI (issue 11 §2): tokend.runtime opens the database."""
    import tokend.cli
    import tokend.runtime

    modules = sorted(Path(tokend.cli.__file__).parent.glob("*.py"))
    assert {"clients.py", "users.py", "tokens.py", "database.py"} <= {p.name for p in modules}
    for path in modules:
        bad = {
            m
            for m in _imports(path)
            if m.split(".")[0] == "sqlalchemy" or m.startswith("tokend.store")
        }
        assert not bad, (path.name, bad)
    # The checker sees what it looks for.
    assert "tokend.store.SqlStore" in _imports(Path(tokend.runtime.__file__))


# -- the real command, once ----------------------------------------------------------------------


def start(*args: str, db: str, input: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEND_")}
    env["TOKEND_SECRET_KEY"] = SECRET_KEY
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokend.cli", *args, "--database-url", db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc.test_input = input  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(proc.test_input, timeout=60)  # type: ignore[attr-defined]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_contract_through_real_subprocess(tmp_path: Path) -> None:
    """The real command: two processes at once on a fresh database (each migrates first),
    then one that depends on their results. (Error paths and the other commands go through
    CliRunner below, which also keeps stdout and stderr apart.)"""
    db = f"sqlite:///{tmp_path / 'tokend.db'}"
    procs = [
        start(
            "clients", "create", "--name", "web", "--redirect-uri", "https://app.example/cb",
            "--redirect-uri", "http://127.0.0.1:8080/cb", "--grant-type", "authorization_code",
            "--grant-type", "refresh_token", "--scope", "openid offline email", "--json", db=db,
        ),
        start("users", "create", "alice", "--password-stdin", db=db, input=PASSWORD + "\n"),
    ]  # fmt: skip
    conf_p, user_p = (finish(p) for p in procs)

    assert conf_p.returncode == 0, conf_p.stderr
    assert conf_p.stdout.count("\n") == 1 and conf_p.stdout.endswith("\n")  # one line
    conf = json.loads(conf_p.stdout)
    assert set(conf) == CONTRACT_KEYS
    assert conf["grant_types"] == ["authorization_code", "refresh_token"]
    assert conf["redirect_uris"] == ["https://app.example/cb", "http://127.0.0.1:8080/cb"]
    assert conf["scope"] == "openid offline email"
    secret = conf["client_secret"]
    assert SECRET_RE.match(secret) and is_well_formed(secret, CLIENT_SECRET_PREFIX)
    assert secret not in conf_p.stderr and "secret" in conf_p.stderr  # a warning, not the value

    assert user_p.returncode == 0, user_p.stderr
    [u] = lines(user_p.stdout)
    assert u["username"] == "alice" and u["id"]

    issue_p = finish(
        start("tokens", "issue", "--client-id", conf["client_id"], "--user", "alice",
              "--scope", "openid offline", "--count", "3", db=db)
    )  # fmt: skip
    assert issue_p.returncode == 0, issue_p.stderr
    responses = lines(issue_p.stdout)
    assert len(responses) == 3
    for r in responses:
        assert {"access_token", "token_type", "expires_in", "refresh_token", "scope",
                "id_token"} <= set(r)  # fmt: skip
        assert r["token_type"] == "Bearer" and r["scope"] == "openid offline"
    assert len({r["refresh_token"] for r in responses}) == 3

    # Only hashes on disk: neither the secret nor a refresh token appears in any file.
    raw = db_bytes(db)
    assert conf["client_id"].encode() in raw  # the scan sees the data
    for value in [secret] + [r["refresh_token"] for r in responses]:
        assert value.encode() not in raw
        assert hash_secret(value) in raw


# -- clients ------------------------------------------------------------------------------------


def test_clients_create_json(cli: Cli, crt: Runtime) -> None:
    out = cli.client()
    assert set(out) == CONTRACT_KEYS
    secret = out["client_secret"]
    assert SECRET_RE.match(secret)
    # 256 bits: 43 base62 digits carry 43 * log2(62) = 256.03 bits.
    assert len(secret) == len("tkd_cs_") + 43 + 6
    stored = crt.store.get_client(out["client_id"])
    assert stored is not None and stored.secret_hash == hash_secret(secret)
    assert not stored.public
    assert stored.scopes == ("openid", "offline", "email")
    assert stored.redirect_uris == ("https://app.example/cb",)
    assert authenticate_client(
        ClientCredentials("client_secret_basic", out["client_id"], secret), crt.store.get_client
    )
    assert cli.client()["client_secret"] != secret
    assert cli.client()["client_id"] != out["client_id"]


def test_clients_create_public(cli: Cli, crt: Runtime) -> None:
    out = cli.client("--public")
    assert set(out) == CONTRACT_KEYS and out["client_secret"] is None
    stored = crt.store.get_client(out["client_id"])
    assert stored.public and stored.secret_hash is None
    r = cli("clients", "create", "--name", "x", "--public", "--grant-type", "client_credentials")
    assert r.exit_code == 2 and "client_credentials" in r.stderr and r.stdout == ""


def test_clients_create_overrides(cli: Cli, crt: Runtime) -> None:
    [out] = cli.ok(
        "clients", "create", "--name", "svc", "--grant-type", "client_credentials",
        "--refresh-grace", "0", "--access-token-ttl", "60", "--json",
    )  # fmt: skip
    assert out["grant_types"] == ["client_credentials"] and out["redirect_uris"] == []
    c = crt.store.get_client(out["client_id"])
    assert (c.refresh_grace, c.access_token_ttl) == (0, 60)


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example/cb",
        "http://localhost.evil.example/cb",
        "http://10.0.0.1/cb",
        "HTTP://app.example/cb",
        "https://app.example/cb#frag",
        "/relative/cb",
        "https:///no-host",
    ],
)
def test_clients_create_refuses_bad_redirect_uri(cli: Cli, uri: str) -> None:
    r = cli("clients", "create", "--name", "x", "--redirect-uri", uri, "--json")
    assert r.exit_code == 2
    assert r.stdout == "" and uri in r.stderr and "Traceback" not in r.stderr
    assert cli.ok("clients", "list") == []


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:8080/cb",
        "http://127.0.0.1/cb",
        "http://[::1]:9000/cb",
        "https://app.example/cb?x=1",
        "com.example.app:/oauth2redirect",
    ],
)
def test_clients_create_accepts_redirect_uri(cli: Cli, uri: str) -> None:
    [out] = cli.ok("clients", "create", "--name", "x", "--redirect-uri", uri, "--json")
    assert out["redirect_uris"] == [uri]


def test_clients_create_refuses_bad_scope(cli: Cli) -> None:
    r = cli("clients", "create", "--name", "x", "--scope", 'openid "quoted"', "--json")
    assert r.exit_code == 2 and "scope" in r.stderr and r.stdout == ""


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--public", "--grant-type", "client_credentials"],
            "Error: Invalid value for --grant-type: public clients cannot use client_credentials",
        ),
        (["--scope", 'openid "q"'], "Error: Invalid value for --scope: malformed scope"),
        (
            ["--redirect-uri", "https://a.example/cb#f"],
            "Error: Invalid value: 'https://a.example/cb#f' must be an absolute URI without a "
            "fragment",
        ),
        (
            ["--redirect-uri", "http://a.example/cb"],
            "Error: Invalid value: 'http://a.example/cb': plain http is allowed only for "
            "loopback (RFC 9700)",
        ),
        (
            ["--subject-type", "pairwise"],
            "Error: Invalid value for --subject-type: a pairwise client needs at least one "
            "redirect URI",
        ),
    ],
    ids=["public-client-credentials", "scope", "fragment", "plain-http", "pairwise"],
)
def test_clients_create_refusals_name_the_option(cli: Cli, args: list[str], line: str) -> None:
    """The domain's refusal (core/registration.py), pointed at the option it came from: a
    usage error (exit status 2) whose last line is the same as it always was."""
    r = cli("clients", "create", "--name", "x", "--json", *args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("Usage: ") and r.stderr.splitlines()[-1] == line


def test_clients_update_with_nothing_to_change_is_a_usage_error(cli: Cli) -> None:
    r = cli("clients", "update", cli.client()["client_id"])
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.startswith("Usage: ")
    assert r.stderr.splitlines()[-1] == (
        "Error: nothing to update: give at least one setting to change"
    )


def test_clients_list_show_delete(cli_any: Cli, crt_any: Runtime) -> None:
    cli, crt = cli_any, crt_any
    a, b = cli.client(), cli.client("--public")
    listed = cli.ok("clients", "list")
    assert [c["client_id"] for c in listed] == [a["client_id"], b["client_id"]]
    for c in listed:
        assert "client_secret" not in c
        assert {"name", "public", "grant_types", "redirect_uris", "scope"} <= set(c)
    assert [c["public"] for c in listed] == [False, True]
    r = cli("clients", "list")
    assert a["client_secret"] not in r.stdout

    [shown] = cli.ok("clients", "show", a["client_id"])
    assert shown == listed[0]
    assert cli.fails("clients", "show", "nope").exit_code == 1

    # Deleting a client takes its token families with it.
    cli.user()
    [issued] = cli.ok("tokens", "issue", "--client-id", a["client_id"], "--user", "alice")
    sid = jwt.decode(issued["access_token"], options={"verify_signature": False})["sid"]
    assert crt.store.peek_family(sid) is not None
    assert cli.ok("clients", "delete", a["client_id"]) == [
        {"client_id": a["client_id"], "deleted": True}
    ]
    assert crt.store.get_client(a["client_id"]) is None
    assert crt.store.peek_family(sid) is None
    assert [c["client_id"] for c in cli.ok("clients", "list")] == [b["client_id"]]
    r = cli.fails("clients", "delete", a["client_id"])
    assert a["client_id"] in r.stderr
    cli.fails("clients", "show", a["client_id"])


def test_clients_rotate_secret(cli: Cli, crt: Runtime) -> None:
    out = cli.client()
    cid, old = out["client_id"], out["client_secret"]

    def auth(secret: str):  # type: ignore[no-untyped-def]
        return authenticate_client(
            ClientCredentials("client_secret_basic", cid, secret), crt.store.get_client
        )

    assert auth(old).client_id == cid
    r = cli("clients", "rotate-secret", cid)
    assert r.exit_code == 0, r.stderr
    [rotated] = lines(r.stdout)
    new = rotated["client_secret"]
    assert rotated["client_id"] == cid and SECRET_RE.match(new) and new != old
    assert new not in r.stderr and r.stderr.strip()
    with pytest.raises(InvalidClient):
        auth(old)
    assert auth(new).client_id == cid
    assert crt.store.get_client(cid).secret_hash == hash_secret(new)

    cli.fails("clients", "rotate-secret", "nope")
    pub = cli.client("--public")
    r = cli.fails("clients", "rotate-secret", pub["client_id"])
    assert r.exit_code == 1 and r.stderr == "Error: public clients have no secret\n"


def test_clients_dpop_nonce_flag_round_trip(cli_any: Cli, crt_any: Runtime) -> None:
    """``--dpop-nonce`` at creation, shown by show and list, changed by ``clients update``;
    the contract's creation output keeps its keys."""
    cli, crt = cli_any, crt_any
    strict, plain = cli.client("--dpop-nonce"), cli.client()
    assert set(strict) == CONTRACT_KEYS
    assert crt.store.get_client(strict["client_id"]).dpop_nonce_required is True
    assert crt.store.get_client(plain["client_id"]).dpop_nonce_required is False
    assert [c["dpop_nonce_required"] for c in cli.ok("clients", "list")] == [True, False]
    [shown] = cli.ok("clients", "show", strict["client_id"])
    assert shown["dpop_nonce_required"] is True
    explicit = cli.client("--no-dpop-nonce")
    assert crt.store.get_client(explicit["client_id"]).dpop_nonce_required is False

    [updated] = cli.ok("clients", "update", strict["client_id"], "--no-dpop-nonce")
    assert updated == {**shown, "dpop_nonce_required": False}
    assert crt.store.get_client(strict["client_id"]).dpop_nonce_required is False
    [updated] = cli.ok("clients", "update", plain["client_id"], "--dpop-nonce")
    assert updated["dpop_nonce_required"] is True
    assert cli.ok("clients", "show", plain["client_id"]) == [updated]
    # Nothing else changed: the secret still authenticates.
    assert authenticate_client(
        ClientCredentials("client_secret_basic", plain["client_id"], plain["client_secret"]),
        crt.store.get_client,
    ).dpop_nonce_required

    assert cli.fails("clients", "update", "nope", "--dpop-nonce").exit_code == 1
    r = cli("clients", "update", plain["client_id"])
    assert r.exit_code == 2 and "nothing to update" in r.stderr and r.stdout == ""


# -- users -------------------------------------------------------------------------------------


def test_users_create(cli: Cli, crt: Runtime) -> None:
    [out] = cli.ok(
        "users", "create", "alice", "--password-stdin", "--email", "a@example.com",
        "--given-name", "Alice", "--family-name", "Liddell",
        input=PASSWORD + "\nsecond line ignored\n",
    )  # fmt: skip
    assert out["username"] == "alice" and out["email"] == "a@example.com" and out["id"]
    user = crt.store.get_user_by_username("alice")
    assert user.id == out["id"]
    assert (user.email, user.given_name, user.family_name) == ("a@example.com", "Alice", "Liddell")
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert PasswordHasher().verify(user.password_hash, PASSWORD)
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(user.password_hash, PASSWORD + "\nsecond line ignored")


def test_users_create_crlf_password(cli: Cli, crt: Runtime) -> None:
    cli.ok("users", "create", "bob", "--password-stdin", input="pw-bob\r\n")
    assert PasswordHasher().verify(crt.store.get_user_by_username("bob").password_hash, "pw-bob")


@pytest.mark.parametrize("stdin", ["", "\n", "\r\n"])
def test_users_create_rejects_empty_password(cli: Cli, crt: Runtime, stdin: str) -> None:
    r = cli.fails("users", "create", "alice", "--password-stdin", input=stdin)
    assert "password" in r.stderr
    assert crt.store.get_user_by_username("alice") is None


def test_users_create_rejects_duplicate(cli: Cli, crt: Runtime) -> None:
    first = cli.user("alice")
    r = cli.fails("users", "create", "alice", "--password-stdin", input="other\n")
    assert "alice" in r.stderr and "exists" in r.stderr
    assert crt.store.get_user_by_username("alice").id == first["id"]


def test_users_create_requires_password_stdin(cli: Cli) -> None:
    r = cli("users", "create", "alice", input="pw\n")
    assert r.exit_code == 2 and "--password-stdin" in r.stderr and r.stdout == ""


# -- tokens ------------------------------------------------------------------------------------


def test_tokens_issue(cli: Cli, crt: Runtime) -> None:
    c = cli.client()
    user = cli.user()
    out = cli.ok(
        "tokens", "issue", "--client-id", c["client_id"], "--user", "alice",
        "--scope", "openid offline", "--count", "3",
    )  # fmt: skip
    assert len(out) == 3
    sids = set()
    for resp in out:
        assert resp["token_type"] == "Bearer"
        assert resp["expires_in"] == crt.settings.access_token_ttl
        assert resp["scope"] == "openid offline"
        claims = jwt.decode(
            resp["access_token"],
            crt.keys.verification_keys()[jwt.get_unverified_header(resp["access_token"])["kid"]],
            algorithms=["RS256"],
            options={"verify_aud": False},
        )
        assert claims["sub"] == user["id"] and claims["client_id"] == c["client_id"]
        assert "id_token" in resp  # openid
        sids.add(claims["sid"])
        # The refresh token works at the token endpoint.
        assert refresh(crt, c["client_id"], c["client_secret"], resp["refresh_token"])
    assert len(sids) == 3  # one family each

    # Without offline: no refresh token; without openid: no ID token.
    [plain] = cli.ok("tokens", "issue", "--client-id", c["client_id"], "--user", "alice",
                     "--scope", "email")  # fmt: skip
    assert "refresh_token" not in plain and "id_token" not in plain
    # offline_access asks for one too.
    c2 = cli.client(scope="openid offline_access")
    [oa] = cli.ok("tokens", "issue", "--client-id", c2["client_id"], "--user", "alice")
    assert oa["refresh_token"] and oa["scope"] == "openid offline_access"  # the client's scope


def test_tokens_issue_errors(cli: Cli) -> None:
    c = cli.client(scope="openid offline")
    cli.user()
    r = cli.fails("tokens", "issue", "--client-id", "nope", "--user", "alice")
    assert "nope" in r.stderr
    r = cli.fails("tokens", "issue", "--client-id", c["client_id"], "--user", "nobody")
    assert "nobody" in r.stderr
    r = cli.fails("tokens", "issue", "--client-id", c["client_id"], "--user", "alice",
                  "--scope", "openid admin")  # fmt: skip
    assert "admin" in r.stderr
    r = cli.fails("tokens", "issue", "--client-id", c["client_id"], "--user", "alice",
                  "--scope", 'openid "bad"')  # fmt: skip
    assert "scope" in r.stderr
    r = cli("tokens", "issue", "--client-id", c["client_id"], "--user", "alice", "--count", "0")
    assert r.exit_code == 2 and r.stdout == ""


def test_tokens_revoke(cli_any: Cli, crt_any: Runtime) -> None:
    cli, crt = cli_any, crt_any
    c1, c2 = cli.client(), cli.client()
    cli.user("alice")
    cli.user("bob")

    def issue(client: dict, user: str) -> tuple[str, str]:  # type: ignore[type-arg]
        [resp] = cli.ok("tokens", "issue", "--client-id", client["client_id"], "--user", user)
        sid = jwt.decode(resp["access_token"], options={"verify_signature": False})["sid"]
        return sid, resp["refresh_token"]

    a1, a2, b1, b2, b3 = (
        issue(c1, "alice"),
        issue(c2, "alice"),
        issue(c1, "bob"),
        issue(c2, "bob"),
        issue(c2, "bob"),
    )

    def revoked() -> set[str]:
        return {sid for sid, _ in (a1, a2, b1, b2, b3) if crt.store.peek_family(sid).revoked_at}

    assert cli.ok("tokens", "revoke", "--user", "alice") == [{"revoked_families": 2}]
    assert revoked() == {a1[0], a2[0]}
    assert cli.ok("tokens", "revoke", "--user", "alice") == [{"revoked_families": 0}]
    assert cli.ok("tokens", "revoke", "--client-id", c1["client_id"]) == [{"revoked_families": 1}]
    assert revoked() == {a1[0], a2[0], b1[0]}
    assert cli.ok("tokens", "revoke", "--family", b2[0]) == [{"revoked_families": 1}]
    assert revoked() == {a1[0], a2[0], b1[0], b2[0]}
    assert cli.ok("tokens", "revoke", "--family", "unknown") == [{"revoked_families": 0}]

    # A revoked family's refresh token is refused; the untouched one still works.
    with pytest.raises(InvalidGrant):
        refresh(crt, c2["client_id"], c2["client_secret"], b2[1])
    assert refresh(crt, c2["client_id"], c2["client_secret"], b3[1]).refresh_token

    r = cli.fails("tokens", "revoke", "--user", "nobody")
    assert "nobody" in r.stderr
    assert cli("tokens", "revoke").exit_code == 2
    r = cli("tokens", "revoke", "--user", "alice", "--family", b3[0])
    assert r.exit_code == 2 and r.stdout == ""
    assert crt.store.peek_family(b3[0]).revoked_at is None


# -- keys --------------------------------------------------------------------------------------


def test_keys_rotate_and_list(cli: Cli, crt: Runtime) -> None:
    [before] = cli.ok("keys", "list")
    assert before["status"] == "current" and before["alg"] == "RS256"
    assert before["retired_at"] is None

    [rot] = cli.ok("keys", "rotate")
    assert rot["alg"] == "RS256" and rot["kid"] != before["kid"]
    listed = {k["kid"]: k for k in cli.ok("keys", "list")}
    assert listed[rot["kid"]]["status"] == "current"
    assert listed[before["kid"]]["status"] == "retired (published)"
    assert listed[before["kid"]]["retired_at"] is not None

    # Running servers pick it up; new tokens carry the new kid, the old key stays published.
    assert crt.keys.reload_if_changed() is True
    assert crt.keys.current_kid() == rot["kid"]
    assert {k["kid"] for k in crt.keys.jwks["keys"]} == {rot["kid"], before["kid"]}

    [es] = cli.ok("keys", "rotate", "--alg", "ES256")
    assert es["alg"] == "ES256"
    crt.keys.reload_if_changed()
    assert crt.keys.current_kid("ES256") == es["kid"]
    assert crt.keys.current_kid("RS256") == rot["kid"]  # other algs untouched
    statuses = {k["kid"]: (k["alg"], k["status"]) for k in cli.ok("keys", "list")}
    assert statuses[es["kid"]] == ("ES256", "current")
    assert statuses[rot["kid"]] == ("RS256", "current")

    r = cli("keys", "rotate", "--alg", "HS256")
    assert r.exit_code == 2 and r.stdout == ""


def test_keys_rotate_follows_signing_alg_setting(cli: Cli) -> None:
    [rot] = cli.ok("keys", "rotate", TOKEND_SIGNING_ALG="EdDSA")
    assert rot["alg"] == "EdDSA"
    algs = {k["alg"] for k in cli.ok("keys", "list") if k["status"] == "current"}
    assert algs == {"RS256", "EdDSA"}  # ID tokens still need RS256


# -- gc, migrate -----------------------------------------------------------------------------------


def test_gc(cli: Cli, crt: Runtime) -> None:
    c = cli.client()
    cli.user()
    [keep] = cli.ok("tokens", "issue", "--client-id", c["client_id"], "--user", "alice")
    [drop] = cli.ok("tokens", "issue", "--client-id", c["client_id"], "--user", "alice")
    drop_sid = jwt.decode(drop["access_token"], options={"verify_signature": False})["sid"]
    keep_sid = jwt.decode(keep["access_token"], options={"verify_signature": False})["sid"]
    cli.ok("tokens", "revoke", "--family", drop_sid)

    [out] = cli.ok("gc")  # default retention (a day): the fresh revocation stays
    assert set(out) == {
        "families",
        "refresh_tokens",
        "authorization_codes",
        "device_authorizations",
        "browser_sessions",
        "security_events",
        "revoked_access_tokens",
        "dpop_proofs",
        "abuse_counters",
        "signing_keys",
    }
    assert out["families"] == 0
    assert crt.store.peek_family(drop_sid) is not None

    time.sleep(0.01)
    [out] = cli.ok("gc", "--retention", "0")
    assert out["families"] == 1
    assert crt.store.peek_family(drop_sid) is None
    assert crt.store.peek_family(keep_sid) is not None
    assert refresh(crt, c["client_id"], c["client_secret"], keep["refresh_token"])
    [again] = cli.ok("gc", "--retention", "0")
    assert again["families"] == 0
    assert cli("gc", "--retention", "-1").exit_code == 2


def test_migrate(blank_cli: Cli) -> None:
    r = blank_cli("migrate")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "" and "up to date" in r.stderr
    engine = create_db_engine(blank_cli.url)
    try:
        assert {"clients", "users", "token_families", "refresh_tokens", "signing_keys"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
    assert blank_cli("migrate").exit_code == 0


@pytest.fixture
def blank_cli(tmp_path: Path) -> Cli:
    return Cli(f"sqlite:///{tmp_path / 'blank' / 'new.db'}")


def test_database_url_from_env(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    runner = CliRunner()
    r = runner.invoke(
        main,
        ["clients", "create", "--name", "x", "--json"],
        env={"TOKEND_DATABASE_URL": url, "TOKEND_SECRET_KEY": SECRET_KEY},
    )
    assert r.exit_code == 0, r.stderr
    cid = json.loads(r.stdout)["client_id"]
    assert [c["client_id"] for c in Cli(url).ok("clients", "list")] == [cid]


def test_missing_secret_key_on_postgres_is_a_message() -> None:
    r = CliRunner().invoke(
        main,
        ["keys", "list", "--database-url", "postgresql://nobody@127.0.0.1:1/none"],
        env={"TOKEND_SECRET_KEY": None},
    )
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    assert "TOKEND_SECRET_KEY" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("name", ["", " ", " alice", "bob\n", "a\x00b"], ids=repr)
def test_users_create_rejects_blank_or_unprintable_username(cli: Cli, name: str) -> None:
    r = cli.fails("users", "create", name, "--password-stdin", input=PASSWORD + "\n")
    assert "USERNAME" in r.stderr


def test_unreachable_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    from tests.support.postgres import free_port

    cli = Cli(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    r = cli.fails("clients", "list")
    assert "database unavailable" in r.stderr


# -- subject types (OIDC Core §8) --------------------------------------------------------------


def test_clients_create_subject_type(cli: Cli, crt: Runtime) -> None:
    default = cli.client()
    assert crt.store.get_client(default["client_id"]).subject_type == "public"
    [shown] = cli.ok("clients", "show", default["client_id"])
    assert shown["subject_type"] == "public"

    [pw] = cli.ok(
        "clients", "create", "--name", "pw", "--subject-type", "pairwise", "--json",
        "--redirect-uri", "https://app.example/cb", "--redirect-uri", "https://app.example:8443/2",
    )  # fmt: skip
    assert set(pw) == CONTRACT_KEYS  # the contract's output is unchanged
    assert crt.store.get_client(pw["client_id"]).subject_type == "pairwise"
    [shown] = cli.ok("clients", "show", pw["client_id"])
    assert shown["subject_type"] == "pairwise"


@pytest.mark.parametrize(
    "uris",
    [
        ("https://a.example/cb", "https://b.example/cb"),
        (),
        ("com.example.app:/oauth2redirect",),
    ],
    ids=["two-hosts", "no-redirect-uri", "no-host"],
)
def test_clients_create_pairwise_needs_one_host(cli: Cli, uris: tuple[str, ...]) -> None:
    args = [a for u in uris for a in ("--redirect-uri", u)]
    r = cli("clients", "create", "--name", "x", "--subject-type", "pairwise", "--json", *args)
    assert r.exit_code == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert "--subject-type" in r.stderr and ("host" in r.stderr or "redirect URI" in r.stderr)
    assert cli.ok("clients", "list") == []
    # The same URIs are fine for a public client.
    cli.ok("clients", "create", "--name", "x", "--subject-type", "public", "--json", *args)


def test_clients_create_refuses_unknown_subject_type(cli: Cli) -> None:
    r = cli("clients", "create", "--name", "x", "--subject-type", "secret", "--json")
    assert r.exit_code == 2 and r.stdout == ""
    assert cli.ok("clients", "list") == []


def test_tokens_issue_uses_the_clients_subject_type(cli: Cli, crt: Runtime) -> None:
    from tokend.core.subjects import pairwise_subject
    from tokend.keys.material import derive

    user = cli.user()
    public = cli.client()

    def pairwise(host: str) -> dict:  # type: ignore[type-arg]
        [out] = cli.ok(
            "clients", "create", "--name", host, "--subject-type", "pairwise", "--json",
            "--redirect-uri", f"https://{host}/cb", "--scope", "openid offline",
        )  # fmt: skip
        return out

    a, b = pairwise("a.example"), pairwise("b.example")

    def subjects(client: dict) -> set[str]:  # type: ignore[type-arg]
        out = cli.ok("tokens", "issue", "--client-id", client["client_id"], "--user", "alice",
                     "--scope", "openid offline", "--count", "2")  # fmt: skip
        subs = set()
        for resp in out:
            for token in (resp["access_token"], resp["id_token"]):
                subs.add(jwt.decode(token, options={"verify_signature": False})["sub"])
            # Refreshing keeps the family's subject.
            refreshed = refresh(crt, client["client_id"], client["client_secret"],
                                resp["refresh_token"])  # fmt: skip
            subs.add(jwt.decode(refreshed.access_token, options={"verify_signature": False})["sub"])
        return subs

    salt = derive(SECRET_KEY, "pairwise-subject")
    assert subjects(public) == {user["id"]}
    assert subjects(a) == {pairwise_subject("a.example", user["id"], salt)}
    assert subjects(b) == {pairwise_subject("b.example", user["id"], salt)}
    assert len(subjects(a) | subjects(b) | {user["id"]}) == 3


# -- user profiles -----------------------------------------------------------------------------


def test_users_create_profile_fields(cli: Cli, crt: Runtime) -> None:
    cli.ok(
        "users", "create", "carol", "--password-stdin", "--email", "c@example.com",
        "--email-verified", "--phone-number", "+441234567890", "--phone-verified",
        "--picture", "https://img.example/c.png", input=PASSWORD + "\n",
    )  # fmt: skip
    u = crt.store.get_user_by_username("carol")
    assert (u.email, u.email_verified) == ("c@example.com", True)
    assert (u.phone_number, u.phone_number_verified) == ("+441234567890", True)
    assert u.picture == "https://img.example/c.png"
    cli.user("dave")
    d = crt.store.get_user_by_username("dave")
    assert (d.email, d.email_verified, d.phone_number, d.phone_number_verified, d.picture) == (
        None, False, None, False, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--picture", "javascript:alert(1)"),
        ("--picture", "/relative.png"),
        ("--picture", "https://"),
        ("--email", "not-an-address"),
        ("--email", "a b@example.com"),
        ("--given-name", "Al\x00ice"),
        ("--family-name", " Liddell"),
        ("--phone-number", "+1\n555"),
    ],
    ids=repr,
)
def test_users_refuse_bad_profile_values(cli: Cli, crt: Runtime, option: str, value: str) -> None:
    r = cli("users", "create", "erin", "--password-stdin", option, value, input=PASSWORD + "\n")
    assert r.exit_code == 2 and r.stdout == "" and option in r.stderr
    assert crt.store.get_user_by_username("erin") is None
    cli.user("frank")
    before = crt.store.get_user_by_username("frank")
    r = cli("users", "update", "frank", option, value)
    assert r.exit_code == 2 and r.stdout == "" and option in r.stderr
    assert crt.store.get_user_by_username("frank") == before


def test_users_update_changes_only_the_given_fields(cli_any: Cli, crt_any: Runtime) -> None:
    cli, crt = cli_any, crt_any
    cli.ok(
        "users", "create", "alice", "--password-stdin", "--email", "a@example.com",
        "--given-name", "Alice", "--family-name", "Liddell", input=PASSWORD + "\n",
    )  # fmt: skip
    before = crt.store.get_user_by_username("alice")
    cli.user("bob")
    bob = crt.store.get_user_by_username("bob")

    [out] = cli.ok(
        "users", "update", "alice", "--email", "alice@new.example", "--email-verified",
        "--phone-number", "+15555550100", "--picture", "https://img.example/a.png",
    )  # fmt: skip
    after = crt.store.get_user_by_username("alice")
    assert out == {
        "id": before.id,
        "username": "alice",
        "email": "alice@new.example",
        "email_verified": True,
        "given_name": "Alice",
        "family_name": "Liddell",
        "phone_number": "+15555550100",
        "phone_number_verified": False,
        "picture": "https://img.example/a.png",
    }
    assert (after.given_name, after.family_name) == ("Alice", "Liddell")  # untouched
    assert after.password_hash == before.password_hash
    assert crt.store.get_user_by_username("bob") == bob  # only that user

    cli.ok("users", "update", "alice", "--no-email-verified", "--phone-verified")
    u = crt.store.get_user_by_username("alice")
    assert (u.email, u.email_verified, u.phone_number_verified) == (
        "alice@new.example", False, True,
    )  # fmt: skip
    # An empty value clears a field.
    [out] = cli.ok("users", "update", "alice", "--given-name", "", "--picture", "")
    assert out["given_name"] is None and out["picture"] is None
    u = crt.store.get_user_by_username("alice")
    assert (u.given_name, u.picture, u.family_name) == (None, None, "Liddell")


def test_users_update_password(cli: Cli, crt: Runtime) -> None:
    cli.user("alice")
    r = cli("users", "update", "alice", "--password-stdin", input="new password\n")
    assert r.exit_code == 0, r.stderr
    [out] = lines(r.stdout)
    assert "password_hash" not in out and "new password" not in r.stdout + r.stderr
    stored = crt.store.get_user_by_username("alice").password_hash
    assert PasswordHasher().verify(stored, "new password")
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(stored, PASSWORD)
    r = cli.fails("users", "update", "alice", "--password-stdin", input="\n")
    assert "password" in r.stderr
    assert crt.store.get_user_by_username("alice").password_hash == stored


def test_users_update_errors(cli: Cli) -> None:
    r = cli.fails("users", "update", "nobody", "--email", "n@example.com")
    assert "nobody" in r.stderr
    cli.user("alice")
    r = cli("users", "update", "alice")
    assert r.exit_code == 2 and r.stdout == "" and "nothing to update" in r.stderr


def test_userinfo_serves_the_cli_profile(cli: Cli, crt: Runtime) -> None:
    """The CLI's profile fields reach the UserInfo endpoint (issue 3, item 5)."""
    from starlette.testclient import TestClient

    from tokend.web.app import create_app

    c = cli.client(scope="openid email phone profile")
    user = cli.user("alice")
    cli.ok("users", "update", "alice", "--email", "a@example.com", "--given-name", "Alice",
           "--phone-number", "+15555550100", "--phone-verified")  # fmt: skip
    [resp] = cli.ok(
        "tokens", "issue", "--client-id", c["client_id"], "--user", "alice",
        TOKEND_ISSUER=crt.settings.issuer,
    )  # fmt: skip
    with TestClient(create_app(crt.settings, runtime=crt), base_url="https://i.test") as http:
        r = http.get(
            "/auth/v2/users/retrieve", headers={"Authorization": "Bearer " + resp["access_token"]}
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sub"] == user["id"]
    assert body["email"] == {"email": "a@example.com", "is_verified": False, "is_primary": True}
    assert body["given_name"] == "Alice" and body["names"]["full_name"] == "Alice"
    assert body["phone_number"] == "+15555550100" and body["phone_number_verified"] is True


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def test_clients_device_grant(cli: Cli, crt: Runtime) -> None:
    """A device client (RFC 8628): public, no redirect URI; ``clients update --grant-type``
    replaces a client's grant types by the registration rules."""
    [tv] = cli.ok(
        "clients", "create", "--name", "TV", "--public", "--grant-type", DEVICE_GRANT,
        "--grant-type", "refresh_token", "--json",
    )  # fmt: skip
    assert tv["client_secret"] is None and tv["redirect_uris"] == []
    assert crt.store.get_client(tv["client_id"]).grant_types == {DEVICE_GRANT, "refresh_token"}
    web = cli.client()
    [updated] = cli.ok("clients", "update", web["client_id"], "--grant-type", DEVICE_GRANT)
    assert updated["grant_types"] == [DEVICE_GRANT]
    assert crt.store.get_client(web["client_id"]).grant_types == {DEVICE_GRANT}
    r = cli("clients", "update", tv["client_id"], "--grant-type", "client_credentials")
    assert r.exit_code != 0 and "client_credentials" in r.stderr
    assert crt.store.get_client(tv["client_id"]).grant_types == {DEVICE_GRANT, "refresh_token"}
    assert cli("clients", "update", web["client_id"], "--grant-type", "password").exit_code == 2


def test_clients_signing_algorithms_round_trip(cli_any: Cli) -> None:
    """--access-token-alg/--id-token-alg stored, shown, changed, back to the default; the
    tokens issued follow them (the ring makes a key for a new algorithm on first need)."""
    cli = cli_any
    made = cli.client("--access-token-alg", "ES256", "--id-token-alg", "EdDSA")
    assert (made["access_token_alg"], made["id_token_alg"]) == ("ES256", "EdDSA")
    cid = made["client_id"]
    [shown] = cli.ok("clients", "show", cid)
    assert (shown["access_token_alg"], shown["id_token_alg"]) == ("ES256", "EdDSA")
    assert "access_token_alg" not in cli.client()  # the contract's create output, unchanged
    [listed] = [c for c in cli.ok("clients", "list") if c["client_id"] != cid]
    assert (listed["access_token_alg"], listed["id_token_alg"]) == (None, None)
    cli.user("bob")
    [tokens] = cli.ok("tokens", "issue", "--client-id", cid, "--user", "bob", "--scope", "openid")
    assert jwt.get_unverified_header(tokens["access_token"])["alg"] == "ES256"
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "EdDSA"

    [updated] = cli.ok("clients", "update", cid, "--access-token-alg", "PS256")
    assert (updated["access_token_alg"], updated["id_token_alg"]) == ("PS256", "EdDSA")
    [updated] = cli.ok("clients", "update", cid, "--id-token-alg", "default")
    assert (updated["access_token_alg"], updated["id_token_alg"]) == ("PS256", None)
    for bad in ("HS256", "none", "rs256"):
        for command in (("clients", "update", cid), ("clients", "create", "--name", "x")):
            r = cli(*command, "--access-token-alg", bad)
            assert r.exit_code == 2 and r.stdout == "", r.stdout
            assert "--access-token-alg" in r.stderr
    [rotated] = cli.ok("keys", "rotate", "--alg", "PS256")
    current = {k["alg"]: k["kid"] for k in cli.ok("keys", "list") if k["status"] == "current"}
    assert current["PS256"] == rotated["kid"]
    assert {"RS256", "ES256", "EdDSA", "PS256"} <= set(current)
