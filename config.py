"""Configuration from the environment (12-factor), read once at start-up.

Every setting has a default fit for development. `load_config` raises `ConfigError`
with one clear line for anything missing or malformed; `server.py` prints that line
and exits, so bad configuration never shows up as a traceback.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

API_STYLES = ("native", "drf", "phone", "simple", "v1")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what is expected."""


@dataclass(frozen=True)
class StyleLifetimes:
    """Token lifetimes for one API style, in seconds."""

    access: int
    refresh: int


@dataclass(frozen=True)
class Config:
    env: str = "development"
    port: int = 8000
    bind: str = "0.0.0.0"
    processes: int = 1  # 0: one per core
    shutdown_grace: int = 20
    metrics_token: str = ""
    mongodb_uri: str | None = None
    db_name: str = "gatehouse"
    db_timeout_ms: int = 5000
    data_dir: Path = Path("var")
    secret_key: str = ""
    bcrypt_rounds: int = 12
    bcrypt_threads: int = 2
    test_endpoints: bool = False
    trust_proxy: int = 0
    api_styles: tuple[str, ...] = API_STYLES
    phone_region: str = "US"
    max_body_bytes: int = 1024 * 1024
    idle_connection_timeout: int = 120
    # Sessions
    session_idle_seconds: int = 7 * 24 * 3600
    session_max_seconds: int = 30 * 24 * 3600
    console_idle_seconds: int = 30 * 60
    console_max_seconds: int = 12 * 3600
    last_active_resolution: int = 60
    session_cache_ms: int = 1000
    session_cache_size: int = 10000
    # JWT
    jwt_issuer: str = "gatehouse"
    jwt_audience: str = "gatehouse"
    jwt_leeway: int = 30
    jwt_private_keys: tuple[tuple[str, str], ...] = ()  # (kid, PEM), first one signs
    refresh_reuse_grace: int = 10
    lifetimes: Mapping[str, StyleLifetimes] = field(default_factory=dict)
    service_keys: tuple[str, ...] = ()
    # One-time codes
    code_length: int = 6
    code_ttl: int = 300
    code_max_attempts: int = 5
    code_cooldown: int = 60
    code_daily_per_phone: int = 10
    code_daily_per_ip: int = 200
    code_verify_failures_per_ip_hour: int = 50
    code_verify_failures_per_destination_hour: int = 20
    # Login throttling
    login_failures_per_account: int = 5
    login_failures_per_ip: int = 100
    login_failure_window: int = 15 * 60
    login_lock_max: int = 3600
    fresh_login_seconds: int = 900
    logins_per_ip_hour: int = 1000
    signups_per_ip_hour: int = 100
    sms_countries: tuple[str, ...] = ()  # ISO region codes codes may be texted to; empty: all
    code_hourly_per_number_block: int = 20
    event_retention_days: int = 90
    # Delivery
    sms_webhook_url: str | None = None
    sms_webhook_token: str | None = None
    smtp_url: str | None = None
    mail_from: str = "gatehouse@localhost"
    delivery_timeout: float = 10.0
    # First admin
    admin_username: str | None = None
    admin_password: str | None = None
    log_format: str = "text"
    # Worker supervision (--processes N)
    worker_max_crashes: int = 10  # more worker deaths than this within the window: exit 1
    worker_crash_window: int = 60
    worker_restart_delay_ms: int = 100  # first restart delay, doubling per quick death
    worker_restart_max_delay_ms: int = 10_000
    # Overload
    request_deadline_ms: int = 5000  # a request's whole budget, its database operations included
    max_in_flight: int = 200  # requests at once past which new ones get 503 at once; 0: no bound

    @property
    def production(self) -> bool:
        return self.env == "production"

    def lifetime(self, style: str) -> StyleLifetimes:
        return self.lifetimes[style]


# Defaults per API style follow what each document shows (see README "API styles").
DEFAULT_LIFETIMES = {
    "native": StyleLifetimes(access=900, refresh=14 * 24 * 3600),
    "drf": StyleLifetimes(access=300, refresh=24 * 3600),
    "phone": StyleLifetimes(access=900, refresh=30 * 24 * 3600),
    "simple": StyleLifetimes(access=24 * 3600, refresh=24 * 3600),
    "v1": StyleLifetimes(access=1800, refresh=14400),
}


class _Reader:
    """Typed access to an environment mapping that names the variable in every error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or default

    def int(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
        return value

    def bool(self, name: str, default: bool = False) -> bool:
        raw = self.str(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be 1/0 (or true/false), got {raw!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(name, default)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value


def _sms_countries(read: _Reader) -> tuple[str, ...]:
    raw = read.str("GATEHOUSE_SMS_COUNTRIES") or ""
    codes = tuple(c.strip().upper() for c in raw.split(",") if c.strip())
    bad = [c for c in codes if not re.fullmatch(r"[A-Z]{2}", c)]
    if bad:
        raise ConfigError(f"GATEHOUSE_SMS_COUNTRIES takes two-letter country codes like US,GB; got {bad[0]!r}")
    return codes


def _api_styles(read: _Reader) -> tuple[str, ...]:
    raw = read.str("GATEHOUSE_API_STYLES", "all")
    if raw == "all":
        return API_STYLES
    styles = tuple(s.strip() for s in raw.split(",") if s.strip())
    unknown = [s for s in styles if s not in API_STYLES]
    if unknown or not styles:
        raise ConfigError(f"GATEHOUSE_API_STYLES must be 'all' or a comma list of {', '.join(API_STYLES)}; got {raw!r}")
    return styles


def _trust_proxy(read: _Reader) -> int:
    """How many proxies in front of us append to X-Forwarded-For (0: trust none)."""
    raw = read.str("GATEHOUSE_TRUST_PROXY")
    if raw is None:
        return 0
    if raw.lower() in ("true", "yes", "on"):
        return 1
    if raw.lower() in ("false", "no", "off"):
        return 0
    return read.int("GATEHOUSE_TRUST_PROXY", 0, 0, 10)


def _lifetimes(read: _Reader) -> dict[str, StyleLifetimes]:
    lifetimes = {}
    for style, default in DEFAULT_LIFETIMES.items():
        prefix = f"GATEHOUSE_{style.upper()}_"
        lifetimes[style] = StyleLifetimes(
            access=read.int(prefix + "ACCESS_SECONDS", default.access, 30, 7 * 24 * 3600),
            refresh=read.int(prefix + "REFRESH_SECONDS", default.refresh, 60, 365 * 24 * 3600),
        )
    return lifetimes


def _jwt_keys(read: _Reader) -> tuple[tuple[str, str], ...]:
    """GATEHOUSE_JWT_KEYS: comma list of `kid=path/to/private.pem`; the first one signs."""
    raw = read.str("GATEHOUSE_JWT_KEYS")
    if raw is None:
        return ()
    keys = []
    for item in raw.split(","):
        kid, sep, path = item.strip().partition("=")
        if not sep or not kid or not path:
            raise ConfigError(f"GATEHOUSE_JWT_KEYS must be 'kid=path.pem[,kid=path.pem…]', got {item!r}")
        try:
            keys.append((kid, Path(path).read_text()))
        except OSError as e:
            raise ConfigError(f"GATEHOUSE_JWT_KEYS: cannot read {path}: {e.strerror}") from None
    return tuple(keys)


def _secret_key(read: _Reader, env: str, data_dir: Path) -> str:
    key = read.str("SECRET_KEY")
    if key:
        if len(key) < 32 and env == "production":
            raise ConfigError("SECRET_KEY must be at least 32 characters in production")
        return key
    if env == "production":
        raise ConfigError("SECRET_KEY is required in production (a long random string)")
    # Development: generate once and keep it beside the embedded database, so tokens
    # and cookies survive a restart.
    path = data_dir / "secret_key"
    try:
        if path.exists():
            return path.read_text().strip()
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key
    except OSError as e:
        raise ConfigError(f"GATEHOUSE_DATA_DIR {data_dir} is not writable: {e.strerror}") from None


def load_config(environ: Mapping[str, str] | None = None, **overrides: object) -> Config:
    """Build the one Config from the environment; keyword overrides win (used by tests and flags)."""
    read = _Reader(os.environ if environ is None else environ)
    env = read.choice("GATEHOUSE_ENV", "development", ("development", "production"))
    data_dir = Path(read.str("GATEHOUSE_DATA_DIR", "var")).expanduser()
    mongodb_uri = read.str("MONGODB_URI")
    if env == "production" and not mongodb_uri:
        raise ConfigError("MONGODB_URI is required in production (the embedded database is for development)")
    bcrypt_rounds = read.int("GATEHOUSE_BCRYPT_ROUNDS", 12, 4, 16)
    if env == "production" and bcrypt_rounds < 10:
        raise ConfigError("GATEHOUSE_BCRYPT_ROUNDS must be at least 10 in production")
    test_endpoints = read.bool("GATEHOUSE_TEST_ENDPOINTS")
    service_keys = tuple(k.strip() for k in (read.str("GATEHOUSE_SERVICE_KEYS") or "").split(",") if k.strip())
    if any(len(k) < 24 for k in service_keys):
        raise ConfigError("GATEHOUSE_SERVICE_KEYS entries must be at least 24 characters each")
    smtp_url = read.str("GATEHOUSE_SMTP_URL")
    if smtp_url and not smtp_url.startswith(("smtp://", "smtps://")):
        raise ConfigError(f"GATEHOUSE_SMTP_URL must start with smtp:// or smtps://, got {smtp_url!r}")
    sms_url = read.str("GATEHOUSE_SMS_WEBHOOK_URL")
    if sms_url and not sms_url.startswith(("http://", "https://")):
        raise ConfigError(f"GATEHOUSE_SMS_WEBHOOK_URL must be an http(s) URL, got {sms_url!r}")
    values: dict[str, object] = dict(
        env=env,
        port=read.int("PORT", 8000, 0, 65535),
        bind=read.str("GATEHOUSE_BIND", "0.0.0.0"),
        processes=read.int("GATEHOUSE_PROCESSES", 1, 0, 64),
        shutdown_grace=read.int("GATEHOUSE_SHUTDOWN_GRACE", 20, 1, 28),
        metrics_token=read.str("GATEHOUSE_METRICS_TOKEN"),
        mongodb_uri=mongodb_uri,
        db_name=read.str("GATEHOUSE_DB_NAME", "gatehouse"),
        db_timeout_ms=read.int("GATEHOUSE_DB_TIMEOUT_MS", 5000, 100, 60000),
        data_dir=data_dir,
        secret_key=_secret_key(read, env, data_dir),
        bcrypt_rounds=bcrypt_rounds,
        bcrypt_threads=read.int("GATEHOUSE_BCRYPT_THREADS", os.cpu_count() or 2, 1, 64),
        test_endpoints=test_endpoints,
        trust_proxy=_trust_proxy(read),
        api_styles=_api_styles(read),
        phone_region=read.str("GATEHOUSE_PHONE_REGION", "US").upper(),
        max_body_bytes=read.int("GATEHOUSE_MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
        idle_connection_timeout=read.int("GATEHOUSE_IDLE_CONNECTION_TIMEOUT", 120, 5, 3600),
        session_idle_seconds=read.int("GATEHOUSE_SESSION_IDLE_SECONDS", 7 * 24 * 3600, 60, 365 * 24 * 3600),
        session_max_seconds=read.int("GATEHOUSE_SESSION_MAX_SECONDS", 30 * 24 * 3600, 60, 365 * 24 * 3600),
        console_idle_seconds=read.int("GATEHOUSE_CONSOLE_IDLE_SECONDS", 30 * 60, 60, 7 * 24 * 3600),
        console_max_seconds=read.int("GATEHOUSE_CONSOLE_MAX_SECONDS", 12 * 3600, 60, 30 * 24 * 3600),
        last_active_resolution=read.int("GATEHOUSE_LAST_ACTIVE_RESOLUTION", 60, 0, 3600),
        session_cache_ms=read.int("GATEHOUSE_SESSION_CACHE_MS", 1000, 0, 1000),
        session_cache_size=read.int("GATEHOUSE_SESSION_CACHE_SIZE", 10000, 0, 1_000_000),
        jwt_issuer=read.str("GATEHOUSE_JWT_ISSUER", "gatehouse"),
        jwt_audience=read.str("GATEHOUSE_JWT_AUDIENCE", "gatehouse"),
        jwt_leeway=read.int("GATEHOUSE_JWT_LEEWAY", 30, 0, 300),
        jwt_private_keys=_jwt_keys(read),
        refresh_reuse_grace=read.int("GATEHOUSE_REFRESH_REUSE_GRACE_SECONDS", 10, 0, 300),
        lifetimes=_lifetimes(read),
        service_keys=service_keys,
        code_length=read.int("GATEHOUSE_CODE_LENGTH", 6, 6, 10),
        code_ttl=read.int("GATEHOUSE_CODE_TTL", 300, 30, 600),
        code_max_attempts=read.int("GATEHOUSE_CODE_MAX_ATTEMPTS", 5, 1, 20),
        code_cooldown=read.int("GATEHOUSE_CODE_COOLDOWN", 60, 0, 3600),
        code_daily_per_phone=read.int("GATEHOUSE_CODE_DAILY_PER_PHONE", 10, 1, 10000),
        code_daily_per_ip=read.int("GATEHOUSE_CODE_DAILY_PER_IP", 200, 1, 1000000),
        code_verify_failures_per_ip_hour=read.int("GATEHOUSE_CODE_VERIFY_FAILURES_PER_IP", 50, 1, 1000000),
        code_verify_failures_per_destination_hour=read.int(
            "GATEHOUSE_CODE_VERIFY_FAILURES_PER_DESTINATION", 20, 1, 10000
        ),
        login_failures_per_account=read.int("GATEHOUSE_LOGIN_FAILURES_PER_ACCOUNT", 5, 1, 100),
        login_failures_per_ip=read.int("GATEHOUSE_LOGIN_FAILURES_PER_IP", 100, 1, 1000000),
        login_failure_window=read.int("GATEHOUSE_LOGIN_FAILURE_WINDOW", 900, 10, 24 * 3600),
        login_lock_max=read.int("GATEHOUSE_LOGIN_LOCK_MAX_SECONDS", 3600, 10, 7 * 24 * 3600),
        fresh_login_seconds=read.int("GATEHOUSE_FRESH_LOGIN_SECONDS", 900, 60, 30 * 24 * 3600),
        logins_per_ip_hour=read.int("GATEHOUSE_LOGINS_PER_IP_HOUR", 1000, 1, 10_000_000),
        signups_per_ip_hour=read.int("GATEHOUSE_SIGNUPS_PER_IP_HOUR", 100, 1, 10_000_000),
        sms_countries=_sms_countries(read),
        code_hourly_per_number_block=read.int("GATEHOUSE_CODE_HOURLY_PER_NUMBER_BLOCK", 20, 1, 100000),
        event_retention_days=read.int("GATEHOUSE_EVENT_RETENTION_DAYS", 90, 1, 3650),
        sms_webhook_url=sms_url,
        sms_webhook_token=read.str("GATEHOUSE_SMS_WEBHOOK_TOKEN"),
        smtp_url=smtp_url,
        mail_from=read.str("GATEHOUSE_MAIL_FROM", "gatehouse@localhost"),
        delivery_timeout=float(read.int("GATEHOUSE_DELIVERY_TIMEOUT", 10, 1, 60)),
        admin_username=read.str("GATEHOUSE_ADMIN_USERNAME"),
        admin_password=read.str("GATEHOUSE_ADMIN_PASSWORD"),
        log_format=read.choice("GATEHOUSE_LOG_FORMAT", "text", ("text", "json")),
        worker_max_crashes=read.int("GATEHOUSE_WORKER_MAX_CRASHES", 10, 1, 10_000),
        worker_crash_window=read.int("GATEHOUSE_WORKER_CRASH_WINDOW", 60, 1, 24 * 3600),
        worker_restart_delay_ms=read.int("GATEHOUSE_WORKER_RESTART_DELAY_MS", 100, 10, 60_000),
        worker_restart_max_delay_ms=read.int("GATEHOUSE_WORKER_RESTART_MAX_DELAY_MS", 10_000, 10, 600_000),
        request_deadline_ms=read.int("GATEHOUSE_REQUEST_DEADLINE_MS", 5000, 100, 60000),
        max_in_flight=read.int("GATEHOUSE_MAX_IN_FLIGHT", 200, 0, 100000),
    )
    if values["session_idle_seconds"] > values["session_max_seconds"]:  # type: ignore[operator]
        raise ConfigError("GATEHOUSE_SESSION_IDLE_SECONDS must not exceed GATEHOUSE_SESSION_MAX_SECONDS")
    if values["worker_restart_delay_ms"] > values["worker_restart_max_delay_ms"]:  # type: ignore[operator]
        raise ConfigError("GATEHOUSE_WORKER_RESTART_DELAY_MS must not exceed GATEHOUSE_WORKER_RESTART_MAX_DELAY_MS")
    if bool(values["admin_username"]) != bool(values["admin_password"]):
        raise ConfigError("GATEHOUSE_ADMIN_USERNAME and GATEHOUSE_ADMIN_PASSWORD go together")
    values.update(overrides)
    if values["env"] == "production" and values["test_endpoints"]:
        # Test-only routes delete accounts without credentials: never in production
        # (checked after the overrides, so no caller can switch them on there either).
        raise ConfigError("GATEHOUSE_TEST_ENDPOINTS must not be set in production (it enables test-only routes)")
    return Config(**values)  # type: ignore[arg-type]
