"""The one frozen, validated settings object behind every tuning keyword argument."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .errors import ConfigError

__all__ = ["DEFAULT_SETTINGS", "Settings"]


def _seconds(
    name: str, value: object, *, allow_none: bool, allow_zero: bool = False
) -> float | None:
    """Return ``value`` as float seconds, or raise ConfigError naming ``name`` and the value."""
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{name}=None is not allowed: give a number of seconds")
    if isinstance(value, timedelta):
        value = value.total_seconds()
    # bool is an int subclass; True seconds is always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r} must be a number of seconds or a timedelta")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigError(f"{name}={value!r} must be finite (use None to turn the limit off)")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={value!r} must be {bound} (use None to turn the limit off)")
    return seconds


def _integer(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer")
    if value < minimum:
        raise ConfigError(f"{name}={value!r} must be >= {minimum}")
    return value


def _ratio(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{name}={value!r} must be a number between 0 and 1")
    if not 0 <= value <= 1:
        raise ConfigError(f"{name}={value!r} must be between 0 and 1")
    return float(value)


def _nameservers(value: object) -> tuple[str, ...] | None:
    """Validate ``["127.0.0.1", "127.0.0.1:5353", "[::1]:5353"]``; None means resolv.conf."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(
            f"dns_nameservers={value!r} must be a non-empty list such as ['127.0.0.1:5353']"
        )
    for entry in value:
        if not isinstance(entry, str):
            raise ConfigError(f"dns_nameservers entry {entry!r} must be a string 'ip[:port]'")
        try:
            parse_nameserver(entry)
        except ValueError as exc:
            raise ConfigError(
                f"dns_nameservers entry {entry!r} is not 'ip[:port]': {exc}"
            ) from None
    return tuple(value)


def parse_nameserver(entry: str) -> tuple[str, int]:
    """Split ``'ip'``, ``'ip:port'`` or ``'[v6]:port'`` into an address and a port (default 53)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = int(port_text)
    else:
        host, port = entry, 53
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every knob of resilient_kube, validated once; each field is also a keyword argument.

    ``None`` turns a limit off. Durations are seconds (``float``) or ``timedelta``.

    Example:
        >>> Settings(read_timeout=10).read_timeout
        10.0
    """

    # --- timeouts and deadline -------------------------------------------------------------
    #: Seconds to establish TCP (and TLS). 5 s: a healthy API server answers a SYN in milliseconds.
    connect_timeout: float | None = 5.0
    #: Seconds without a byte from the server before an attempt fails (not applied to watches).
    read_timeout: float | None = 30.0
    #: One budget for the whole call: limiter wait, every attempt and every backoff. 60 s is the
    #: API server's own request timeout, so a longer wait can never be answered anyway.
    deadline: float | None = 60.0

    #: A watch stream that sends no byte at all (no event, no bookmark) for this long is cut and
    #: re-opened from its last resourceVersion (``resilient_kube.Watch``). The API server sends
    #: a bookmark about once a minute to watches that ask for them (docs/watches.md).
    watch_idle_timeout: float | None = 150.0

    # --- connection pool --------------------------------------------------------------------
    #: Connections kept per host. Must cover peak concurrency (threads + open watches): above it,
    #: urllib3 opens and throws away connections ("Connection pool is full").
    pool_maxsize: int = 100
    #: A pooled connection idle longer than this is closed before reuse. 30 s sits below common
    #: load-balancer idle cut-offs (AWS NLB 350 s, Azure LB 4 min, many proxies 60 s).
    pool_idle_timeout: float | None = 30.0
    #: TCP keepalive: idle seconds before the first probe, seconds between probes, probes lost
    #: before the kernel drops the connection. 10 + 5 * 2 = 20 s to notice a dead idle peer.
    keepalive_idle: float | None = 10.0
    keepalive_interval: float = 5.0
    keepalive_count: int = 2
    #: TCP_USER_TIMEOUT: unacknowledged data older than this kills the connection (20 s, not the
    #: kernel's ~15 min of retransmissions).
    tcp_user_timeout: float | None = 20.0

    # --- retries ----------------------------------------------------------------------------
    #: Wire attempts per call, the first one included. 1 turns retries off.
    max_attempts: int = 5
    #: Full-jitter backoff: the n-th retry (n = 1, 2, ...) waits
    #: uniform(0, min(backoff_max, backoff_base * 2**(n - 1))).
    backoff_base: float = 0.1
    backoff_max: float = 10.0
    #: The longest Retry-After honoured; a server asking for more gets its answer returned.
    retry_after_max: float = 60.0
    #: Re-send POST and PATCH after the request may have reached the server. Off: a repeat may
    #: create or change twice. Safe for a POST with a fixed metadata.name (a repeat meets 409).
    retry_non_idempotent: bool = False
    #: Retries may add at most this share of the calls made in the last ``retry_budget_window``
    #: seconds, plus ``retry_budget_min_per_second``. 0.3 masks a 20% failure rate (which needs
    #: 0.25) and caps a total outage at about 1.3x the offered load.
    retry_budget_ratio: float = 0.3
    retry_budget_min_per_second: float = 1.0
    retry_budget_window: float = 10.0

    # --- client-side rate limit -------------------------------------------------------------
    #: Token bucket: sustained requests per second (None: no limiter) and the burst allowed.
    #: 50/100 is ten times client-go's 5/10.
    qps: float | None = 50.0
    burst: int = 100

    # --- DNS cache --------------------------------------------------------------------------
    #: Resolve the API server's name with the local cache (False: the system resolver per connect).
    dns_cache: bool = True
    #: Resolvers as 'ip[:port]'; None reads /etc/resolv.conf.
    dns_nameservers: tuple[str, ...] | None = None
    #: Clamp on record TTLs, the time failures are cached (RFC 2308), how long a stale answer may
    #: be served while the resolver fails (RFC 8767), and the per-query timeout.
    dns_min_ttl: float = 5.0
    dns_max_ttl: float = 300.0
    dns_negative_ttl: float = 5.0
    dns_stale_ttl: float = 86400.0
    dns_timeout: float = 2.0

    def __post_init__(self) -> None:
        def fix(name: str, value: object) -> None:
            # Frozen: store the normalised value (int or timedelta -> float) behind the guard.
            object.__setattr__(self, name, value)

        for name in (
            "connect_timeout",
            "read_timeout",
            "deadline",
            "pool_idle_timeout",
            "watch_idle_timeout",
        ):
            fix(name, _seconds(name, getattr(self, name), allow_none=True))
        fix("keepalive_idle", _seconds("keepalive_idle", self.keepalive_idle, allow_none=True))
        fix(
            "tcp_user_timeout", _seconds("tcp_user_timeout", self.tcp_user_timeout, allow_none=True)
        )
        for name in ("keepalive_interval", "backoff_max", "retry_budget_window", "dns_timeout"):
            fix(name, _seconds(name, getattr(self, name), allow_none=False))
        for name in (
            "backoff_base",
            "retry_after_max",
            "dns_min_ttl",
            "dns_max_ttl",
            "dns_negative_ttl",
            "dns_stale_ttl",
        ):
            fix(name, _seconds(name, getattr(self, name), allow_none=False, allow_zero=True))
        _integer("pool_maxsize", self.pool_maxsize, minimum=1)
        _integer("keepalive_count", self.keepalive_count, minimum=1)
        _integer("max_attempts", self.max_attempts, minimum=1)
        _integer("burst", self.burst, minimum=1)
        fix("retry_budget_ratio", _ratio("retry_budget_ratio", self.retry_budget_ratio))
        fix(
            "retry_budget_min_per_second",
            _seconds(
                "retry_budget_min_per_second",
                self.retry_budget_min_per_second,
                allow_none=False,
                allow_zero=True,
            ),
        )
        fix("qps", _seconds("qps", self.qps, allow_none=True))
        for name in ("retry_non_idempotent", "dns_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be True or False")
        fix("dns_nameservers", _nameservers(self.dns_nameservers))
        if self.dns_min_ttl > self.dns_max_ttl:
            raise ConfigError(
                f"dns_min_ttl={self.dns_min_ttl!r} must not exceed dns_max_ttl={self.dns_max_ttl!r}"
            )
        if self.backoff_base > self.backoff_max:
            raise ConfigError(
                f"backoff_base={self.backoff_base!r} must not exceed "
                f"backoff_max={self.backoff_max!r}"
            )

    @classmethod
    def from_kwargs(cls, base: Settings | None = None, /, **tuning: Any) -> Settings:
        """Build settings from keyword arguments, naming any unknown keyword.

        Raises:
            ConfigError: an unknown keyword, or a bad value (the message names both).
        """
        known = {field.name for field in dataclasses.fields(cls)}
        for name, value in tuning.items():
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown tuning argument {name!r}={value!r}{hint}") from None
        return dataclasses.replace(base or DEFAULT_SETTINGS, **tuning)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied and validated."""
        return Settings.from_kwargs(self, **changes)


#: The defaults, for comparison and for ``Settings.from_kwargs``.
DEFAULT_SETTINGS = Settings()
