"""The security event trail (issue 12): every security decision is stored with its source
address and logged on ``tokend.security`` once committed, and ``tokend events`` lists it
(``--type``, ``--since``, ``--limit``, ``--json``; newest last). Never a secret: each test
scans what was stored, printed and logged for every token, secret, code, password and
cookie it created, and for their hashes (a refresh token's hash is its lookup key).

Requests go through the real app in-process, from a chosen peer address (behind a trusted
proxy for the reuse); the CLI is the real command, in-process, on the same database.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from tests.conftest import ISSUER, SECRET_KEY
from tests.support.family import first_family, register_client
from tests.test_cli import Cli
from tests.web.helpers import REVOKE as REVOKE_ENDPOINT
from tests.web.helpers import TOKEN, assert_oauth_error, assert_tokens, refresh
from tests.web.test_pages import (
    REVOKE,
    Browser,
    Party,
    at_redirect_uri,
    authorize_url,
    exchange,
    make_party,
)
from tokend.config import Settings
from tokend.core.events import EVENT_KINDS, EventKind
from tokend.core.models import SecurityEvent
from tokend.core.secrets import hash_secret
from tokend.runtime import Runtime, build_runtime
from tokend.store.schema import security_events
from tokend.web.app import create_app

WITHDRAW = "/account/consents/withdraw"
EVERYWHERE = "/account/logout/everywhere"
ATTACKER = "203.0.113.9"  # behind the trusted proxy
PROXY = "127.0.0.1"
USER_ADDRESS = "198.51.100.23"


# -- helpers -----------------------------------------------------------------------------------


def forms_of(secret: str) -> list[str]:
    """A secret as it might leak: itself, and its SHA-256 (hex, base64, base64url)."""
    digest = hash_secret(secret)
    return [
        secret,
        digest.hex(),
        base64.b64encode(digest).decode().rstrip("="),
        base64.urlsafe_b64encode(digest).decode().rstrip("="),
    ]


def stored_rows(rt: Runtime) -> list[dict[str, Any]]:
    with rt.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(security_events)).all()]


def assert_no_secret(texts: Iterable[str], secrets: Iterable[str | None]) -> None:
    blob = "\n".join(texts)
    for secret in secrets:
        if secret:
            for form in forms_of(secret):
                assert form not in blob, f"a secret ({secret[:8]}...) leaked into the trail"


def trail_texts(rt: Runtime, cli_out: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Everything the trail shows: the stored rows, the CLI's output, the log lines (their
    message and their ``event`` fields, as the JSON formatter prints them)."""
    texts = [json.dumps(r, default=str) for r in stored_rows(rt)]
    texts.append(cli_out)
    for rec in caplog.records:
        texts.append(rec.getMessage())
        texts.append(json.dumps(getattr(rec, "event", None), default=str))
    return texts


def events_json(cli: Cli, *args: str) -> tuple[list[dict[str, Any]], str]:
    r = cli("events", "--json", *args)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return [json.loads(line) for line in r.stdout.splitlines()], r.stdout


def of_client(objs: list[dict[str, Any]], client_id: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["client_id"] == client_id]


def logged(caplog: pytest.LogCaptureFixture, kind: str) -> list[dict[str, Any]]:
    """The ``event`` fields of the ``tokend.security`` lines of ``kind``."""
    return [
        r.event  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "tokend.security" and getattr(r, "event", {}).get("type") == kind
    ]


@pytest.fixture
def security_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="tokend.security")
    return caplog


@pytest.fixture
def proxied(rt: Runtime) -> Iterator[TestClient]:
    """The app behind a trusted proxy on 127.0.0.1 (TOKEND_TRUSTED_PROXIES), on ``rt``'s
    database and clock: the event's address must be X-Forwarded-For's, not the peer's."""
    settings = Settings(
        database_url=rt.settings.database_url,
        secret_key=SECRET_KEY,
        issuer=ISSUER,
        trusted_proxies=PROXY,
    )
    runtime = build_runtime(settings, clock=rt.clock)
    with TestClient(
        create_app(settings, runtime=runtime),
        base_url=ISSUER,
        raise_server_exceptions=False,
        client=(PROXY, 40000),
        headers={"X-Forwarded-For": ATTACKER},
    ) as client:
        yield client
    runtime.close()


def at_address(app: Any, address: str) -> TestClient:
    return TestClient(
        app, base_url=ISSUER, follow_redirects=False, client=(address, 50000)
    )  # fmt: skip


# -- the acceptance case: a reuse over HTTP, listed by `tokend events` -----------------------


def test_a_reuse_over_http_is_listed_with_client_family_subject_and_address(
    rt: Runtime, proxied: TestClient, security_log: pytest.LogCaptureFixture
) -> None:
    fam = first_family(rt, grant_types=("refresh_token",))
    first = fam.refresh_token
    r = proxied.post(TOKEN, data=refresh(first), auth=fam.auth)
    second = assert_tokens(r)
    rt.clock.advance(rt.settings.refresh_reuse_grace + 1)  # type: ignore[attr-defined]
    assert_oauth_error(proxied.post(TOKEN, data=refresh(first), auth=fam.auth), "invalid_grant")
    family_id = jwt.decode(second["access_token"], options={"verify_signature": False})["sid"]

    objs, out = events_json(Cli(rt.settings.database_url), "--type", "refresh_token_reuse")
    [event] = of_client(objs, fam.client.client_id)
    assert event["type"] == "refresh_token_reuse"
    assert event["family_id"] == family_id
    assert event["subject"] == fam.user.id
    assert event["address"] == ATTACKER  # the proxy's X-Forwarded-For, not the proxy
    assert event["count"] == 1 and event["detail"]["seconds_since_spent"] > 0
    # RFC 3339, UTC, to the millisecond.
    when = datetime.fromtimestamp(rt.clock.now(), UTC).isoformat(timespec="milliseconds")
    assert event["time"] == when.replace("+00:00", "Z")
    # One log line, once committed, with the same fields.
    [line] = logged(security_log, "refresh_token_reuse")
    assert (line["client_id"], line["family_id"], line["address"], line["subject"]) == (
        fam.client.client_id,
        family_id,
        ATTACKER,
        fam.user.id,
    )
    secrets = [first, second["refresh_token"], second["access_token"], fam.reg.secret]
    assert_no_secret(trail_texts(rt, out, security_log), secrets)


def test_wrong_client_and_grace_retry_carry_the_address(
    rt: Runtime, proxied: TestClient, security_log: pytest.LogCaptureFixture
) -> None:
    fam = first_family(rt)
    other = register_client(rt, scopes="openid offline", grant_types=("refresh_token",))
    token = fam.refresh_token
    r = proxied.post(TOKEN, data=refresh(token), auth=other.basic)
    assert_oauth_error(r, "invalid_grant")
    successor = assert_tokens(proxied.post(TOKEN, data=refresh(token), auth=fam.auth))
    again = assert_tokens(proxied.post(TOKEN, data=refresh(token), auth=fam.auth))  # grace
    assert again["refresh_token"] == successor["refresh_token"]
    rows = {r["kind"]: r for r in stored_rows(rt) if r["family_id"] is not None}
    wrong = [r for r in stored_rows(rt) if r["kind"] == EventKind.REFRESH_TOKEN_WRONG_CLIENT]
    assert [(r["client_id"], r["address"]) for r in wrong] == [(other.client_id, ATTACKER)]
    grace = rows[EventKind.REFRESH_TOKEN_GRACE_RETRY]
    assert (grace["client_id"], grace["address"]) == (fam.client.client_id, ATTACKER)
    secrets = [token, successor["refresh_token"], successor["access_token"], other.secret]
    assert_no_secret(trail_texts(rt, "", security_log), secrets)


def test_a_client_revoking_its_tokens_is_recorded_rfc_7009(
    rt: Runtime, security_log: pytest.LogCaptureFixture
) -> None:
    fam = first_family(rt)
    access = fam.first.access_token
    family_id = jwt.decode(access, options={"verify_signature": False})["sid"]
    app = create_app(rt.settings, runtime=rt)
    with at_address(app, USER_ADDRESS) as http:
        for token in (access, fam.refresh_token, fam.refresh_token):  # the last: a no-op
            r = http.post(REVOKE_ENDPOINT, data={"token": token}, auth=fam.auth)
            assert r.status_code == 200
    rows = [r for r in stored_rows(rt) if r["kind"] == EventKind.TOKEN_REVOKED_BY_CLIENT]
    got = [
        (r["client_id"], r["family_id"], r["address"], json.loads(r["detail"])["token_type"])
        for r in rows
    ]
    assert got == [
        (fam.client.client_id, family_id, USER_ADDRESS, "access_token"),
        (fam.client.client_id, family_id, USER_ADDRESS, "refresh_token"),
    ]
    assert rows[1]["user_id"] == fam.user.id
    assert len(logged(security_log, EventKind.TOKEN_REVOKED_BY_CLIENT)) == 2
    assert_no_secret(trail_texts(rt, "", security_log), [access, fam.refresh_token])


def test_account_revoke_withdraw_and_sign_out_everywhere_are_recorded(
    rt: Runtime, security_log: pytest.LogCaptureFixture
) -> None:
    party: Party = make_party(rt)
    app = create_app(rt.settings, runtime=rt)
    with at_address(app, USER_ADDRESS) as client, at_address(app, "192.0.2.50") as api:
        browser = Browser(client)
        code = browser.grant(party)["code"]
        tokens = assert_tokens(exchange(api, party, code))
        family_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
        assert browser.post(REVOKE, browser.account()[1].form(REVOKE).hidden).status_code == 303
        code2 = at_redirect_uri(browser.decide(browser.get(authorize_url(party)), "allow"))["code"]
        tokens2 = assert_tokens(exchange(api, party, code2))
        form = next(f for f in browser.account()[1].forms if f.action == WITHDRAW)
        assert browser.post(WITHDRAW, form.hidden).status_code == 303
        session = browser.cookie("__Host-tokend_session") or ""
        assert browser.post(EVERYWHERE, browser.account()[1].form(EVERYWHERE).hidden)
    mine = [r for r in stored_rows(rt) if r["user_id"] == party.user.id]
    got = [(r["kind"], r["client_id"], r["address"], json.loads(r["detail"])) for r in mine]
    assert got == [
        (EventKind.FAMILY_REVOKED_BY_USER, party.client_id, USER_ADDRESS, {}),
        (EventKind.CONSENT_WITHDRAWN, party.client_id, USER_ADDRESS, {"families": 1}),
        (EventKind.USER_SIGNED_OUT_EVERYWHERE, None, USER_ADDRESS, {"sessions": 1}),
    ]
    assert mine[0]["family_id"] == family_id
    secrets = [
        code,
        code2,
        party.password,
        party.secret,
        session,
        *tokens.values(),
        *tokens2.values(),
    ]
    assert_no_secret(
        trail_texts(rt, "", security_log), [s for s in secrets if isinstance(s, str) and s[:4]]
    )


# -- what administrators do on the command line ---------------------------------------------


def test_admin_actions_are_recorded_without_an_address(
    db_url: str, security_log: pytest.LogCaptureFixture
) -> None:
    cli = Cli(db_url)
    client = cli.client()
    cli.ok("users", "create", "alice", "--password-stdin", input="pw-correct horse\n")
    issued = cli.ok("tokens", "issue", "--client-id", client["client_id"], "--user", "alice",
                    "--count", "3")  # fmt: skip
    family = jwt.decode(issued[0]["access_token"], options={"verify_signature": False})["sid"]
    cli.ok("tokens", "revoke", "--family", family)
    cli.ok("tokens", "revoke", "--client-id", client["client_id"])
    cli.ok("tokens", "revoke", "--user", "alice")
    [key] = cli.ok("keys", "rotate")
    [rotated] = cli.ok("clients", "rotate-secret", client["client_id"])

    objs, out = events_json(cli)
    got = [(o["type"], o["client_id"], o["family_id"], o["detail"]) for o in objs]
    assert got == [
        ("tokens_revoked_by_admin", None, family, {"families": 1}),
        ("tokens_revoked_by_admin", client["client_id"], None, {"families": 2}),
        ("tokens_revoked_by_admin", None, None, {"user": "alice", "families": 0, "sessions": 0}),
        ("signing_key_rotated", None, None, {"kid": key["kid"], "alg": "RS256", "keys_retired": 1}),
        ("client_secret_rotated", client["client_id"], None, {}),
    ]
    assert all(o["address"] is None for o in objs)
    assert objs[2]["subject"] is not None  # the user's id
    # One log line per event, in the same order.
    lines = [getattr(r, "event", {}) for r in security_log.records if r.name == "tokend.security"]
    assert [line["type"] for line in lines] == [o["type"] for o in objs]
    secrets = [client["client_secret"], rotated["client_secret"], "pw-correct horse"]
    for resp in issued:
        secrets += [resp["access_token"], resp["refresh_token"], resp.get("id_token")]
    assert_no_secret([out, *trail_texts_cli(security_log)], secrets)


def trail_texts_cli(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        text
        for r in caplog.records
        for text in (r.getMessage(), json.dumps(getattr(r, "event", None)))
    ]


# -- the listing: filters, order, formats -------------------------------------------------------


def test_type_since_and_limit_filter_in_sql_and_the_newest_come_last(rt: Runtime) -> None:
    now = time.time()
    with rt.store.transaction() as tx:
        # Recorded out of time order: the listing orders by time, not by insertion.
        for kind, ago in (
            (EventKind.THROTTLED, 3 * 86400),
            (EventKind.REFRESH_TOKEN_REUSE, 7200),
            (EventKind.THROTTLED, 60),
            (EventKind.REFRESH_TOKEN_REUSE, 30 * 86400),
            (EventKind.REFRESH_TOKEN_REUSE, 600),
            (EventKind.CLIENT_SECRET_ROTATED, 10),
        ):
            tx.record_event(SecurityEvent(kind, now - ago, detail={"ago": ago}))
    cli = Cli(rt.settings.database_url)

    def agos(*args: str) -> list[tuple[str, int]]:
        objs, _ = events_json(cli, *args)
        return [(o["type"], o["detail"]["ago"]) for o in objs]

    reuse = "refresh_token_reuse"
    assert [a for _, a in agos()] == [30 * 86400, 3 * 86400, 7200, 600, 60, 10]  # newest last
    assert agos("--type", reuse) == [(reuse, 30 * 86400), (reuse, 7200), (reuse, 600)]
    assert agos("--type", reuse, "--limit", "2") == [(reuse, 7200), (reuse, 600)]  # newest 2
    assert [a for _, a in agos("--since", "2h")] == [600, 60, 10]  # 7200 s ago is outside
    assert [a for _, a in agos("--since", "7d", "--limit", "4")] == [7200, 600, 60, 10]
    assert [a for _, a in agos("--type", reuse, "--type", "throttled", "--since", "4d")] == [
        3 * 86400,
        7200,
        600,
        60,
    ]
    stamp = datetime.fromtimestamp(now - 700, UTC).isoformat().replace("+00:00", "Z")
    assert [a for _, a in agos("--since", stamp)] == [600, 60, 10]
    offset = datetime.fromtimestamp(now - 700, UTC).astimezone().isoformat()
    assert [a for _, a in agos("--since", offset)] == [600, 60, 10]

    # Unknown type, bad --since, bad --limit: usage errors (exit 2) that say what is allowed.
    r = cli("events", "--type", "nope")
    assert r.exit_code == 2 and "refresh_token_reuse" in r.stderr and "throttled" in r.stderr
    for bad in ("yesterday", "15", "2026-12-01T04:00:00", "-5m"):
        r = cli("events", "--since", bad)
        assert r.exit_code == 2 and "--since" in r.stderr, (bad, r.stderr)
    assert cli("events", "--limit", "0").exit_code == 2

    # Without --json: a table, a heading then one row per event, newest last.
    r = cli("events", "--limit", "2")
    assert r.exit_code == 0, r.stderr
    head, *rows = r.stdout.splitlines()
    assert head.split()[:3] == ["TIME", "TYPE", "CLIENT"]
    assert [row.split()[1] for row in rows] == ["throttled", "client_secret_rotated"]


def test_every_kind_is_listed_by_the_cli() -> None:
    assert set(EVENT_KINDS) == {k.value for k in EventKind}
    for kind in (
        "refresh_token_reuse",
        "refresh_token_wrong_client",
        "authorization_code_replay",
        "refresh_token_grace_retry",
        "token_revoked_by_client",
        "family_revoked_by_user",
        "consent_withdrawn",
        "user_signed_out_everywhere",
        "tokens_revoked_by_admin",
        "signing_key_rotated",
        "client_secret_rotated",
        "throttled",
    ):
        assert kind in EVENT_KINDS


def test_the_table_escapes_what_a_request_put_in_an_event(rt: Runtime) -> None:
    with rt.store.transaction() as tx:
        tx.record_event(
            SecurityEvent(
                EventKind.THROTTLED,
                time.time(),
                client_id="evil\x1b[2J",
                detail={"username": "x\x1b]0;pwned\x07"},
            )
        )
    r = Cli(rt.settings.database_url)("events")
    assert r.exit_code == 0 and "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "evil\\x1b[2J" in r.stdout


def test_code_replay_is_recorded_with_the_address(rt: Runtime) -> None:
    party = make_party(rt)
    app = create_app(rt.settings, runtime=rt)
    with at_address(app, USER_ADDRESS) as client, at_address(app, "192.0.2.77") as api:
        code = Browser(client).grant(party)["code"]
        assert_tokens(exchange(api, party, code))
        assert_oauth_error(exchange(api, party, code), "invalid_grant")
    [row] = [r for r in stored_rows(rt) if r["kind"] == EventKind.AUTHORIZATION_CODE_REPLAY]
    assert (row["client_id"], row["user_id"], row["address"]) == (
        party.client_id,
        party.user.id,
        "192.0.2.77",
    )
    assert_no_secret([json.dumps(row, default=str)], [code, party.secret])
