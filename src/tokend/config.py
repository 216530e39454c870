"""One typed settings object, read from ``TOKEND_*`` environment variables (DESIGN.md)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokend.core.jose import SIGNING_ALGS
from tokend.core.models import Policy
from tokend.core.throttle import (
    CLIENT,
    CLIENT_ADDRESS,
    DEVICE_START_ADDRESS,
    LOGIN,
    LOGIN_ADDRESS,
    USER_CODE_ADDRESS,
    Limit,
    ThrottlePolicy,
)
from tokend.dburl import asyncpg_connect_args, is_sqlite, sqlite_path

DEFAULT_DATABASE_URL = "sqlite:///./tokend.db"


class MissingSecretKey(RuntimeError):
    pass


class Settings(BaseSettings):
    # An invalid value is named in the message, never shown: it may be a secret.
    model_config = SettingsConfigDict(
        env_prefix="TOKEND_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    issuer: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    access_token_ttl: int = Field(3600, ge=1)
    client_credentials_ttl: int = Field(86400, ge=1)
    refresh_token_ttl: int = Field(2_592_000, ge=1)
    refresh_token_idle_ttl: int = Field(1_209_600, ge=1)
    refresh_reuse_grace: int = Field(10, ge=0, le=300)
    # Grace-window retries answered per spent refresh token; one more is reuse.
    refresh_grace_retries: int = Field(10, ge=1, le=1000)
    signing_alg: str = "RS256"
    access_token_audience: str | None = None
    secret_key: str | None = None
    # The secret read from a file instead (container secrets: /run/secrets/..., a Kubernetes
    # secret volume); one trailing newline is not part of it.
    secret_key_file: Path | None = None
    max_body_bytes: int = Field(16 * 1024, ge=1024)
    # A request's head (request line and header fields): at most this many bytes (431
    # beyond), received within this many seconds of its first byte (tokend.web.http).
    max_header_bytes: int = Field(32 * 1024, ge=8 * 1024)
    header_timeout: float = Field(10.0, gt=0, le=300)
    session_ttl: int = Field(43200, ge=60)  # browser sign-in session, seconds
    # RFC 8628: seconds a device code (and a cross-device sign-in's QR code) lives.
    device_code_ttl: int = Field(600, ge=60, le=3600)
    key_refresh_interval: float = Field(2.0, gt=0)
    # Seconds between the server's gc sweeps (what `tokend gc` deletes, with its default
    # retention), run by one worker of all the servers at a time; 0: no sweep.
    gc_interval: float = Field(0, ge=0)
    # RFC 9449: how far a DPoP proof's iat may be from now (seconds, either way), and
    # whether every proof must carry a server nonce (DPoP-Nonce, §8), for all clients ("off":
    # only for the clients registered with dpop_nonce_required).
    dpop_proof_window: int = Field(60, ge=1, le=3600)
    dpop_nonce: Literal["off", "on"] = "off"
    db_pool_size: int = Field(10, ge=1)
    db_concurrency: int = Field(8, ge=1)
    # tokend.logs: the level of every logger of the server, and its lines: "text" for
    # people, "json" (one object per line, with the request id) for a log pipeline. No
    # "trace": uvicorn's trace level logs every request's headers, cookies and credentials.
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = "text"
    # Abuse limits (README "Abuse limits", tokend.core.throttle). Failed authentications per
    # THROTTLE_WINDOW seconds (fixed window from the first failure) before HTTP 429; 0 turns
    # a limit off. Client authentication (token, revocation, introspection): per (client_id,
    # source address) and per address. Sign-ins: per (username, address) and per address.
    # Per address is looser: one address may be a whole office behind NAT.
    throttle_window: int = Field(900, ge=1, le=86400)
    client_auth_failure_limit: int = Field(10, ge=0)
    client_auth_address_failure_limit: int = Field(100, ge=0)
    login_failure_limit: int = Field(10, ge=0)
    login_address_failure_limit: int = Field(50, ge=0)
    # /device: user codes that match nothing, per address (RFC 8628 §5.1); and cross-device
    # sign-ins (a QR on the login page, one stored row each) started per address.
    user_code_failure_limit: int = Field(20, ge=0)
    cross_device_start_limit: int = Field(60, ge=0)
    # Security events that anyone can trigger (another client's token revoked with a public
    # client id): at most one row per kind, client and address per this many seconds, with
    # a count of the occurrences.
    event_aggregation_window: int = Field(3600, ge=1)
    # Addresses and CIDR networks (comma-separated) of reverse proxies whose X-Forwarded-For
    # is believed: the source address is then its right-most entry not in this list.
    trusted_proxies: str = ""
    # Argon2id password checks running at once per process (64 MiB each): a flood of
    # sign-ins queues for these instead of exhausting memory. Default: the CPU count.
    password_hash_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # GET /metrics asks for this bearer token when set (401 without it); unset: open.
    metrics_token: str | None = None
    # tokend.web.webhook: POST each security event, as JSON signed with HMAC-SHA256 under the
    # secret (shared with the receiver, at least 32 characters), to this URL (https; http only
    # to a loopback host), off the request path, by one worker of all the servers at a time.
    events_webhook: str | None = Field(None, repr=False)
    events_webhook_secret: str | None = Field(None, repr=False)

    @field_validator("signing_alg")
    @classmethod
    def _alg(cls, v: str) -> str:
        if v not in SIGNING_ALGS:
            raise ValueError(f"TOKEND_SIGNING_ALG must be one of {', '.join(SIGNING_ALGS)}")
        return v

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: str) -> str:
        for item in filter(None, (p.strip() for p in v.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"TOKEND_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR network"
                ) from None
        return v

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False)
            for p in self.trusted_proxies.split(",")
            if p.strip()
        )

    def throttle_policy(self) -> ThrottlePolicy:
        w = float(self.throttle_window)
        return ThrottlePolicy(
            client=Limit(CLIENT, self.client_auth_failure_limit, w),
            client_address=Limit(CLIENT_ADDRESS, self.client_auth_address_failure_limit, w),
            login=Limit(LOGIN, self.login_failure_limit, w),
            login_address=Limit(LOGIN_ADDRESS, self.login_address_failure_limit, w),
            user_code=Limit(USER_CODE_ADDRESS, self.user_code_failure_limit, w),
            device_start=Limit(DEVICE_START_ADDRESS, self.cross_device_start_limit, w),
        )

    @field_validator(
        "secret_key",
        "secret_key_file",
        "metrics_token",
        "events_webhook",
        "events_webhook_secret",
        mode="before",
    )
    @classmethod
    def _unset_if_empty(cls, v: object) -> object:
        return None if v == "" else v  # `TOKEND_SECRET_KEY_FILE=` is no file, not "."

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        if not is_sqlite(v):
            asyncpg_connect_args(v)  # the server's driver honours what the URL says
        return v

    @field_validator("events_webhook")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        if v is not None:
            check_webhook_url(v)
        return v

    @model_validator(mode="after")
    def _webhook_secret(self) -> Settings:
        secret = self.events_webhook_secret
        if self.events_webhook is None:
            if secret is not None:
                raise ValueError(
                    "TOKEND_EVENTS_WEBHOOK_SECRET is set but TOKEND_EVENTS_WEBHOOK is not: "
                    "set the URL too, or unset the secret"
                )
        elif secret is None:
            raise ValueError(
                "TOKEND_EVENTS_WEBHOOK needs TOKEND_EVENTS_WEBHOOK_SECRET (the HMAC key the "
                "receiver checks signatures with; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        elif len(secret) < MIN_SECRET_CHARS:
            raise ValueError(
                f"TOKEND_EVENTS_WEBHOOK_SECRET must be at least {MIN_SECRET_CHARS} characters"
            )
        return self

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @property
    def effective_issuer(self) -> str:
        return self.issuer or f"http://{self.host}:{self.port}"

    def policy(self) -> Policy:
        return Policy(
            issuer=self.effective_issuer,
            access_token_ttl=self.access_token_ttl,
            client_credentials_ttl=self.client_credentials_ttl,
            refresh_token_ttl=self.refresh_token_ttl,
            refresh_idle_ttl=self.refresh_token_idle_ttl,
            refresh_reuse_grace=self.refresh_reuse_grace,
            refresh_grace_retries=self.refresh_grace_retries,
            event_aggregation_window=self.event_aggregation_window,
            audience=self.access_token_audience,
            dpop_nonce=self.dpop_nonce == "on",
        )

    @property
    def key_retention(self) -> float:
        """How long a retired signing key stays published: the longest token lifetime + 1 h."""
        return max(self.access_token_ttl, self.client_credentials_ttl) + 3600

    def resolve_secret_key(self) -> str:
        """``TOKEND_SECRET_KEY``, or the content of ``TOKEND_SECRET_KEY_FILE``, or on SQLite a
        secret generated once into a 0600 file beside the database (``<database>.secret``)."""
        if self.secret_key and self.secret_key_file:
            raise MissingSecretKey(
                "set TOKEND_SECRET_KEY or TOKEND_SECRET_KEY_FILE, not both: "
                "which one is the secret would be a guess"
            )
        if self.secret_key_file:
            return read_secret_file(self.secret_key_file)
        if self.secret_key:
            if len(self.secret_key) < MIN_SECRET_CHARS:
                raise MissingSecretKey(
                    f"TOKEND_SECRET_KEY must be at least {MIN_SECRET_CHARS} characters"
                )
            return self.secret_key
        path = self.generated_secret_path
        if path is None:
            raise MissingSecretKey(
                "TOKEND_SECRET_KEY or TOKEND_SECRET_KEY_FILE is required with this database "
                "(generate one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return load_or_create_secret(path)

    @property
    def generated_secret_path(self) -> Path | None:
        """The file the secret is generated into when none is configured (SQLite only):
        ``<database>.secret``; None when a secret is configured or on PostgreSQL."""
        if self.secret_key or self.secret_key_file:
            return None
        path = sqlite_path(self.database_url)
        return None if path is None else Path(str(path) + ".secret")

    def startup_warnings(self) -> list[str]:
        """What `tokend serve` says once before it starts (one line each)."""
        warnings = []
        generated = self.generated_secret_path
        if generated is not None and self.effective_issuer.startswith("https://"):
            warnings.append(
                f"the issuer is https but the secret key is the file generated beside the "
                f"database ({generated}): whoever gets a copy of that directory (a backup) can "
                f"decrypt the signing keys and forge tokens; keep the secret apart with "
                f"TOKEND_SECRET_KEY_FILE (or TOKEND_SECRET_KEY)"
            )
        return warnings


MIN_SECRET_CHARS = 32
# What gc keeps (`tokend gc` and the TOKEND_GC_INTERVAL sweep): expired and revoked data for
# a day (a consumed code stays that long to catch its replay), security events 90 days.
GC_RETENTION = 86400
GC_EVENT_RETENTION = 90 * 86400
MAX_SECRET_FILE_BYTES = 4096
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def check_webhook_url(url: str) -> None:
    """``ValueError`` unless ``url`` is an absolute https URL (http only to a loopback host:
    a test receiver, a sidecar), without credentials or a fragment. The messages never
    repeat the URL: its query may carry the receiver's own token."""
    name = "TOKEND_EVENTS_WEBHOOK"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is no port)
    except ValueError:
        raise ValueError(f"{name} is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{name} must be an absolute https URL (https://host/path)")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{name} must not carry credentials (user:password@): the receiver checks the "
            f"signature made with TOKEND_EVENTS_WEBHOOK_SECRET"
        )
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"{name} must not have a fragment (#...)")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"{name} must be https (http only to a loopback host: 127.0.0.1, ::1, localhost): "
            f"events name users, clients and addresses"
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_secret_file(path: Path) -> str:
    """The secret in ``TOKEND_SECRET_KEY_FILE``: the file's text without one trailing newline
    (``\\n`` or ``\\r\\n``), at least 32 characters. A file anyone on the machine may write is
    refused (whoever rewrites it chooses the key); one anyone may read is accepted, since
    Docker mounts secrets 0444 and Kubernetes 0644, inside the container's own users."""
    where = f"TOKEND_SECRET_KEY_FILE={path}"
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise MissingSecretKey(f"{where} is not a regular file")
            if st.st_mode & stat.S_IWOTH:
                raise MissingSecretKey(
                    f"{where} is writable by every user (mode {stat.S_IMODE(st.st_mode):04o}): "
                    f"anyone could replace the key; make it 0400 or 0600 (chmod o-w)"
                )
            raw = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise MissingSecretKey(f"{where} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise MissingSecretKey(f"{where} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MissingSecretKey(f"{where} is not UTF-8 text") from None
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if not value:
        raise MissingSecretKey(f"{where} is empty")
    if len(value) < MIN_SECRET_CHARS:
        raise MissingSecretKey(f"{where} must hold at least {MIN_SECRET_CHARS} characters")
    return value


def load_or_create_secret(path: Path) -> str:
    """Read the secret file, creating it atomically (0600) if absent; concurrent first starts
    all end up with the same value."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temporary file of our own (threads of one process too), created 0600.
        fd, name = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48) + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process got there first
                os.link(tmp, path)  # atomic
        finally:
            tmp.unlink(missing_ok=True)
    value = path.read_text().strip()
    if len(value) < 32:
        raise MissingSecretKey(f"{path} does not hold a usable secret")
    return value
