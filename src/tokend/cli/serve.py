"""``tokend serve``: migrate, make a signing key if there is none, and serve HTTP; on a
database without clients, first print the four steps to a first refresh."""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import sys
import tempfile

import click
from pydantic import ValidationError

from tokend import logs
from tokend.cli.database import database_option, runtime
from tokend.cli.output import reported_as_log_records, say, warn
from tokend.config import DEFAULT_DATABASE_URL, Settings


@click.command()
@database_option
@click.option("--host", default="127.0.0.1", show_default=True, envvar="TOKEND_HOST")
@click.option("--port", default=8000, show_default=True, type=int, envvar="TOKEND_PORT")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), envvar="TOKEND_WORKERS"
)
@click.option("--issuer", envvar="TOKEND_ISSUER", help="Defaults to http://HOST:PORT.")
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(
    database_url: str, host: str, port: int, workers: int, issuer: str | None, access_log: bool
) -> None:
    """Migrate, make a signing key if there is none, and serve HTTP."""
    import uvicorn

    from tokend.web.http import LimitedHttpToolsProtocol

    # Logging first: with TOKEND_LOG_FORMAT=json every line of this process is JSON, from
    # the migrations on (tokend.logs); uvicorn applies the same configuration in each worker.
    try:
        settings = Settings(database_url=database_url)
    except ValidationError as exc:  # a TOKEND_* value that cannot be: one message, no traceback
        raise click.ClickException(str(exc)) from None
    log_format, log_level = settings.log_format, settings.log_level
    logs.configure(log_format, log_level)
    with (
        reported_as_log_records(log_format == "json"),
        runtime(database_url, host=host, port=port, issuer=issuer) as rt,
    ):
        issuer_url = rt.policy.issuer
        for warning in rt.settings.startup_warnings():
            warn(warning)
        if rt.store.count_clients() == 0:
            _print_next_steps(issuer_url, database_url)
    os.environ.update(
        TOKEND_DATABASE_URL=database_url,
        TOKEND_HOST=host,
        TOKEND_PORT=str(port),
        TOKEND_ISSUER=issuer_url,
    )
    say(f"tokend: serving {issuer_url} with {workers} worker(s)")
    _metrics_directory(workers)
    uvicorn.run(
        "tokend.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=LimitedHttpToolsProtocol,  # httptools, with bounds on a request's head
        access_log=access_log,
        log_config=logs.log_config(log_format, log_level),  # in every worker too
        log_level=log_level,
        server_header=False,
        date_header=True,
    )


def _metrics_directory(workers: int) -> None:
    """With several workers, /metrics sums them: each writes its values into a fresh private
    directory (0700, a name nobody chose) that prometheus_client's multiprocess mode reads
    at a scrape. Made before uvicorn starts the workers (they inherit the variable; one
    left in the environment is replaced: its files could be another server's or stale),
    removed when this process exits. One worker serves in this process, with the normal
    registry (or with the directory the environment named before prometheus_client was
    imported: the library's own rule)."""
    if workers == 1:
        return
    path = tempfile.mkdtemp(prefix="tokend-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)


def _cli_prefix(database_url: str) -> str:
    exe = sys.argv[0]
    cmd = "tokend" if os.path.basename(exe) == exe else shlex.quote(os.path.relpath(exe))
    if database_url != DEFAULT_DATABASE_URL:
        cmd += f" --database-url {shlex.quote(database_url)}"
    return cmd


def _print_next_steps(issuer: str, database_url: str) -> None:
    t = _cli_prefix(database_url).split(" --database-url")
    exe = t[0]
    db = f" --database-url {t[1].strip()}" if len(t) > 1 else ""
    say(
        f"""
This database has no clients yet. Your first refresh, in four steps (another terminal):

  1. Register a client and keep its secret (shown once):
       {exe} clients create{db} --name demo --scope "openid offline email" --json
  2. Create a user:
       printf 'correct horse battery staple' | {exe} users create{db} alice --password-stdin
  3. Mint a token family for them, as if alice had signed in:
       {exe} tokens issue{db} --client-id CLIENT_ID --user alice --scope "openid offline"
  4. Refresh it exactly as in the spec (Basic auth, form body):
       curl -s {issuer}/auth/v2/token -u 'CLIENT_ID:CLIENT_SECRET' \\
            -d grant_type=refresh_token -d refresh_token=REFRESH_TOKEN
"""
    )
