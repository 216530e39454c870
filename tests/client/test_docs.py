"""The client's documentation runs: every example file in docs/client.md, and the README's
"Python client" snippet, executed against the real server on loopback. An example that
stops working fails here, not in a reader's terminal."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client.support import (
    issue,
    register_client,
    register_user,
    sign_in_and_consent,
)
from tokend.client import InvalidGrant, TokenResponse

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = re.compile(r"```python\n# (\w+\.py)\n(.*?)```", re.S)
pytestmark = pytest.mark.timeout(60)


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall((ROOT / "docs" / "client.md").read_text()))


def readme_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python client", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_docs_have_the_examples_this_module_runs() -> None:
    assert set(examples()) == {
        "refresh_once.py",
        "client_calls.py",
        "api_sync.py",
        "api_async.py",
        "webapp.py",
        "device_login.py",
    }


@pytest.fixture
def env(live, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    rt, base = live
    reg = register_client(rt)
    user = register_user(rt)
    return {
        **os.environ,
        "TOKEND_ISSUER": base,
        "CLIENT_ID": reg.client_id,
        "CLIENT_SECRET": reg.secret,
        "REFRESH_TOKEN": issue(rt, reg, user).refresh_token,
        "TOKEN_FILE": str(tmp_path / "token.json"),
        "PYTHONPATH": str(ROOT / "src"),
    }


def run(name: str, env: dict[str, str], tmp_path: Path) -> str:
    path = tmp_path / name
    path.write_text(examples()[name])
    out = subprocess.run(
        [sys.executable, str(path)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_refresh_once(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = run("refresh_once.py", env, tmp_path).splitlines()
    assert lines[0].startswith("tkd_rt_") and lines[0] != env["REFRESH_TOKEN"]
    assert lines[1].startswith("Bearer openid offline expires at ")


def test_refresh_once_error_path(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "refresh_once.py"
    path.write_text(examples()["refresh_once.py"])
    out = subprocess.run(
        [sys.executable, str(path)],
        env={**env, "REFRESH_TOKEN": "tkd_rt_" + "A" * 49},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert out.stderr == (
        "Error refreshing tokens: The refresh token was invalid or has expired. (invalid_grant)\n"
    )


def test_client_calls(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = run("client_calls.py", env, tmp_path)
    assert "'sub':" in out and "send the user to " + env["TOKEND_ISSUER"] in out
    assert "active: True\n" in out and "after revoke: False\n" in out


@pytest.mark.parametrize("name", ["api_sync.py", "api_async.py"])
def test_api_examples(env, tmp_path, name) -> None:  # type: ignore[no-untyped-def]
    out = run(name, env, tmp_path)
    if name == "api_sync.py":
        assert out.startswith("{'sub': ")
    else:
        assert out.strip() == str([200] * 10)
    # The first run saved a token; a second run starts from it (REFRESH_TOKEN is spent).
    assert (tmp_path / "token.json").stat().st_mode & 0o777 == 0o600
    run(name, {**env, "REFRESH_TOKEN": "spent"}, tmp_path)


def test_device_login_shows_the_code_and_its_qr_then_signs_in(live, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The device example on the real server, in real time: it prints the user code, the
    verification URI and the QR code of verification_uri_complete; the person approves
    (the server's own service, as the /device page does); its next poll, one interval
    (5 s) later, gets the tokens."""
    import segno

    rt, base = live
    device_grant = "urn:ietf:params:oauth:grant-type:device_code"
    reg = register_client(
        rt, public=True, grant_types=(device_grant, "refresh_token"), scopes="openid offline"
    )
    user = register_user(rt)
    path = tmp_path / "device_login.py"
    path.write_text(examples()["device_login.py"])
    env = {
        **os.environ,
        "TOKEND_ISSUER": base,
        "CLIENT_ID": reg.client_id,
        "TOKEN_FILE": str(tmp_path / "token.json"),
        "PYTHONPATH": str(ROOT / "src"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
    }
    with subprocess.Popen(
        [sys.executable, str(path)], env=env, cwd=tmp_path, text=True, encoding="utf-8",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        opening = [proc.stdout.readline(), proc.stdout.readline()]
        assert opening[0] == f"On your phone or computer, open {base}/device\n", opening
        code = re.fullmatch(r"and enter the code (\S+), or scan this:\n", opening[1])
        assert code is not None, opening
        pending = rt.device.pending(code[1])
        assert pending is not None and pending.client_id == reg.client_id
        assert rt.device.approve(pending.id, user_id=user.id, auth_time=time.time(), address=None)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    qr = io.StringIO()
    segno.make(f"{base}/device?user_code={code[1]}").terminal(out=qr, compact=True)
    assert out.startswith(qr.getvalue()), out  # the QR of verification_uri_complete
    assert out.endswith(f"Signed in: Bearer openid offline\nHello, {user.id}\n"), out
    saved = TokenResponse.from_dict(json.loads((tmp_path / "token.json").read_text()))
    assert saved.refresh_token


def test_webapp_signs_in_and_keeps_tokens_per_user(live, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rt, base = live
    webapp_url = "http://127.0.0.1:5000"
    reg = register_client(rt, redirect_uris=(f"{webapp_url}/callback",))
    user = register_user(rt)
    monkeypatch.setenv("TOKEND_ISSUER", base)
    monkeypatch.setenv("CLIENT_ID", reg.client_id)
    monkeypatch.setenv("CLIENT_SECRET", reg.secret)
    monkeypatch.setenv("WEBAPP_DATABASE", str(tmp_path / "webapp.db"))
    path = tmp_path / "webapp.py"
    path.write_text(examples()["webapp.py"])
    spec = importlib.util.spec_from_file_location("docs_webapp", path)
    assert spec is not None and spec.loader is not None
    webapp: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(webapp)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], str]:
        transport = httpx.ASGITransport(webapp.app)
        async with httpx.AsyncClient(transport=transport, base_url=webapp_url) as browser:
            r = await browser.get("/me")
            assert r.status_code == 302 and r.headers["location"] == "/login"
            r = await browser.get("/login")
            assert r.status_code == 302 and r.headers["location"].startswith(base)
            with httpx.Client() as at_tokend:  # the same browser, on tokend's pages
                callback = await asyncio.to_thread(
                    sign_in_and_consent, at_tokend, r.headers["location"], user.username
                )
            assert callback.startswith(f"{webapp_url}/callback?")
            r = await browser.get(callback)
            assert r.status_code == 303, r.text
            first = (await browser.get("/me")).json()
            # The access token runs out: the next call refreshes and saves per user.
            store = webapp.SqliteTokenStore(first["user"])
            before = store.load()
            store.save(dataclasses.replace(before, expires_at=time.time() - 1))
            second = (await browser.get("/me")).json()
            return first, second, before.refresh_token

    first, second, old_refresh = asyncio.run(scenario())
    assert first["api_said"]["sub"] == first["user"] == second["user"]
    assert second["api_said"]["sub"] == first["user"]
    after = webapp.SqliteTokenStore(first["user"]).load()
    assert after.refresh_token not in (None, old_refresh)


def test_readme_snippet(live, capsys) -> None:  # type: ignore[no-untyped-def]
    rt, base = live
    reg = register_client(rt)
    family = issue(rt, reg, register_user(rt))

    def with_values(refresh_token: str) -> str:
        code = readme_snippet()
        for placeholder, value in {
            "http://127.0.0.1:8000/auth/v2/token": f"{base}/auth/v2/token",
            "your_client_id": reg.client_id,
            "your_client_secret": reg.secret,
            "your_refresh_token": refresh_token,
        }.items():
            assert code.count(f'"{placeholder}"') == 1, placeholder
            code = code.replace(f'"{placeholder}"', repr(value))
        return code

    namespace: dict[str, Any] = {}
    exec(with_values(family.refresh_token), namespace)
    tokens = namespace["tokens"]
    assert isinstance(tokens, TokenResponse)
    assert tokens.refresh_token not in (None, family.refresh_token)

    with pytest.raises(InvalidGrant):
        exec(with_values("tkd_rt_" + "A" * 49), {})
    assert capsys.readouterr().out == (
        "Error refreshing tokens: The refresh token was invalid or has expired.\n"
    )


def test_readme_device_snippet_uses_the_documented_calls() -> None:
    """The README's device-grant snippet (its second Python block) compiles and calls only
    what the library has; docs/client.md's device_login.py runs the same calls for real."""
    import ast

    from tokend.client import DeviceAuthorization, OAuthClient

    section = (ROOT / "README.md").read_text().split("## Python client", 1)[1]
    code = section.split("```python\n")[2].split("```", 1)[0]
    tree = ast.parse(code)
    called = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert {"from_issuer", "device_authorization", "poll_device_token"} <= called
    for name in called:
        assert hasattr(OAuthClient, name) or name in {
            f.name for f in dataclasses.fields(DeviceAuthorization)
        }, name
