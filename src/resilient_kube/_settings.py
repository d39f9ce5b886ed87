"""The one frozen, validated settings object behind every tuning keyword argument.

Every field carries its own validator (``_check`` in its metadata), which names the field and the
value in its ``ConfigError`` and holds the bounds the field really has: a value that would fail
every call later (a keepalive Linux refuses, a number too large for a C int or a float) fails
when the client is built instead. ``Tuning`` types the keyword arguments for mypy.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import math
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Final, TypedDict, Unpack

from ._redact import redact_url
from .errors import ConfigError

__all__ = ["DEFAULT_SETTINGS", "Settings", "Tuning"]

#: The longest duration any setting takes: a year. Longer ones overflow the C timevals and
#: floats that sockets and the limiter turn them into, and mean "no limit", which is None.
_LONGEST: Final = 365 * 86400.0
#: Linux caps TCP_KEEPIDLE and TCP_KEEPINTVL at 32767 s and TCP_KEEPCNT at 127 (tcp(7)).
_MAX_KEEPALIVE_SECONDS: Final = 32767.0
_MAX_KEEPALIVE_COUNT: Final = 127
#: urllib3 fills a pool's queue with maxsize placeholders up front: 10**7 took 6 s.
_MAX_POOL: Final = 10_000
#: What fits a C int, for counts handed to the kernel or to urllib3.
_C_INT_MAX: Final = 2**31 - 1

_Check = Callable[[str, object], object]


def _seconds(
    name: str,
    value: object,
    *,
    allow_none: bool,
    allow_zero: bool = False,
    maximum: float = _LONGEST,
) -> float | None:
    """Return ``value`` as float seconds, or raise ConfigError naming ``name`` and the value."""
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{name}=None is not allowed: give a number of seconds")
    given = value
    if isinstance(value, timedelta):
        value = value.total_seconds()
    # bool is an int subclass; True seconds is always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={given!r} must be a number of seconds or a timedelta")
    try:
        seconds = float(value)
    except OverflowError:  # an int past any float
        seconds = math.inf
    if math.isnan(seconds) or math.isinf(seconds):
        off = " (use None to turn the limit off)" if allow_none else ""
        raise ConfigError(f"{name}={given!r} must be finite{off}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        off = " (use None to turn the limit off)" if allow_none else ""
        raise ConfigError(f"{name}={given!r} must be {bound}{off}")
    if seconds > maximum:
        off = "; None turns the limit off" if allow_none else ""
        raise ConfigError(f"{name}={given!r} must be at most {maximum:g} seconds{off}")
    return seconds


def _integer(name: str, value: object, *, minimum: int, maximum: int = _C_INT_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer")
    if value < minimum:
        raise ConfigError(f"{name}={value!r} must be >= {minimum}")
    if value > maximum:
        raise ConfigError(f"{name}={value!r} must be at most {maximum}")
    return value


def _optional_integer(name: str, value: object, *, minimum: int, maximum: int) -> int | None:
    return None if value is None else _integer(name, value, minimum=minimum, maximum=maximum)


def _rate(name: str, value: object) -> float | None:
    """Requests per second: None (no limit) or between one per 1000 s and a million."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{name}={value!r} must be a number of requests per second")
    if not value > 0:
        raise ConfigError(f"{name}={value!r} must be > 0 (use None to turn it off)")
    if not 0.001 <= value <= 1e6:
        raise ConfigError(f"{name}={value!r} must be between 0.001 and 1e6 requests per second")
    return float(value)


def _ratio(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{name}={value!r} must be a number between 0 and 1")
    if not 0 <= value <= 1:
        raise ConfigError(f"{name}={value!r} must be between 0 and 1")
    return float(value)


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be True or False")
    return value


def _nameservers(name: str, value: object) -> tuple[str, ...] | None:
    """Validate ``["127.0.0.1", "127.0.0.1:5353", "[::1]:5353"]``; None means resolv.conf."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"{name}={value!r} must be a non-empty list such as ['127.0.0.1:5353']")
    for entry in value:
        if not isinstance(entry, str):
            raise ConfigError(f"{name} entry {entry!r} must be a string 'ip[:port]'")
        try:
            parse_nameserver(entry)
        except ValueError as exc:
            raise ConfigError(f"{name} entry {entry!r} is not 'ip[:port]': {exc}") from None
    return tuple(value)


def parse_nameserver(entry: str) -> tuple[str, int]:
    """Split ``'ip'``, ``'ip:port'`` or ``'[v6]:port'`` into an address and a port (default 53)."""
    port_text = "53"
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket:
            raise ValueError("'[' without ']'")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{rest!r} after ']'")
            port_text = rest[1:]
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    else:
        host = entry
    # int() would take " 53", "+53" and "5_3".
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port


def _endpoints(name: str, value: object) -> tuple[str, ...] | None:
    """Validate ``["https://10.0.0.1:6443", ...]``; None means the configured host alone."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(
            f"{name}={value!r} must be a non-empty list such as ['https://10.0.0.1:6443']"
        )
    from ._endpoints import parse_endpoint  # the one parser, beside its user

    schemes = set()
    for entry in value:
        if not isinstance(entry, str):
            raise ConfigError(f"{name} entry {entry!r} must be a URL 'https://host:port'")
        try:
            schemes.add(parse_endpoint(entry)[0])
        except ValueError as exc:
            raise ConfigError(  # never a password in a message
                f"{name} entry {redact_url(entry)!r} is not 'scheme://host[:port]': {exc}"
            ) from None
    if len(schemes) > 1:
        raise ConfigError(f"{name}={value!r} mixes http and https: they share one identity")
    return tuple(value)


def _domains(name: str, value: object) -> tuple[str, ...] | None:
    """Validate a search list such as ``["default.svc.cluster.local", "cluster.local"]``."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{name}={value!r} must be a list such as ['cluster.local']")
    for entry in value:
        labels = entry.strip(".").split(".") if isinstance(entry, str) else []
        if not labels or not all(
            0 < len(label) < 64 and label.replace("-", "").replace("_", "").isalnum()
            for label in labels
        ):
            raise ConfigError(f"{name} entry {entry!r} is not a domain name")
    return tuple(value)


def _setting(default: Any, check: _Check) -> Any:
    """A field with its default and the validator that normalises and bounds it."""
    return dataclasses.field(default=default, metadata={"check": check})


_timeout = functools.partial(_seconds, allow_none=True)
_duration = functools.partial(_seconds, allow_none=False)
_duration_or_zero = functools.partial(_seconds, allow_none=False, allow_zero=True)


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
    connect_timeout: float | None = _setting(5.0, _timeout)
    #: Seconds without a byte from the server before an attempt fails (not applied to watches).
    read_timeout: float | None = _setting(30.0, _timeout)
    #: One budget for the whole call: limiter wait, every attempt and every backoff. 60 s is the
    #: API server's own request timeout, so a longer wait can never be answered anyway.
    deadline: float | None = _setting(60.0, _timeout)

    #: A watch stream that sends no byte at all (no event, no bookmark) for this long is cut and
    #: re-opened from its last resourceVersion (``resilient_kube.Watch``). kube-apiserver sends a
    #: bookmark about once a minute (measured: 60 s apart, once 120 s), so 180 s never cuts a
    #: healthy stream that asked for bookmarks (docs/watches.md).
    watch_idle_timeout: float | None = _setting(180.0, _timeout)

    #: The largest response body read into memory, decoded; a larger one ends the call with
    #: ``ResponseTooLarge`` (None: no limit). 512 MiB holds a list of 100,000 large objects.
    max_response_bytes: int | None = _setting(
        512 * 2**20, functools.partial(_optional_integer, minimum=1, maximum=2**62)
    )
    #: Log each distinct ``Warning`` the API server sends (deprecated APIs, CRD versions,
    #: validation) once per client on ``resilient_kube.warnings``; False drops them, as the
    #: official client does. ``ApiClient.on_server_warning`` plugs in another handler.
    server_warnings: bool = _setting(True, _boolean)

    #: The longest an exec credential plugin may run (it also counts against the call's
    #: deadline): a plugin that hangs fails the call with a clear error instead of hanging it.
    exec_timeout: float = _setting(30.0, _duration)

    # --- connection pool --------------------------------------------------------------------
    #: Connections kept per host. Must cover peak concurrency (threads + open watches): above it,
    #: urllib3 opens and throws away connections ("Connection pool is full").
    pool_maxsize: int = _setting(100, functools.partial(_integer, minimum=1, maximum=_MAX_POOL))
    #: A pooled connection idle longer than this is closed before reuse. 30 s sits below common
    #: load-balancer idle cut-offs (AWS NLB 350 s, Azure LB 4 min, many proxies 60 s).
    pool_idle_timeout: float | None = _setting(30.0, _timeout)
    #: TCP keepalive: idle seconds before the first probe, seconds between probes, probes lost
    #: before the kernel drops the connection. 10 + 5 * 2 = 20 s to notice a dead idle peer.
    keepalive_idle: float | None = _setting(
        10.0, functools.partial(_timeout, maximum=_MAX_KEEPALIVE_SECONDS)
    )
    keepalive_interval: float = _setting(
        5.0, functools.partial(_duration, maximum=_MAX_KEEPALIVE_SECONDS)
    )
    keepalive_count: int = _setting(
        2, functools.partial(_integer, minimum=1, maximum=_MAX_KEEPALIVE_COUNT)
    )
    #: TCP_USER_TIMEOUT: unacknowledged data older than this kills the connection (20 s, not the
    #: kernel's ~15 min of retransmissions).
    # In milliseconds for the kernel, as a C unsigned int: at most about 49 days.
    tcp_user_timeout: float | None = _setting(
        20.0, functools.partial(_timeout, maximum=2**32 / 1000 - 1)
    )

    # --- several API servers -----------------------------------------------------------------
    #: API server URLs that share the configured host's identity (CA, credentials, TLS name):
    #: calls spread over the healthy ones and a retry goes to another. None: the host alone.
    endpoints: tuple[str, ...] | None = _setting(None, _endpoints)
    #: Each endpoint's ``/readyz`` is checked this often, with this timeout; ``eject_after``
    #: failures in a row (checks or calls) eject it until two checks pass: within about 5 s.
    health_interval: float = _setting(2.0, _duration)
    health_timeout: float = _setting(1.0, _duration)
    eject_after: int = _setting(2, functools.partial(_integer, minimum=1, maximum=1000))

    # --- retries ----------------------------------------------------------------------------
    #: Attempts per call that reached a server, the first one included. 1 turns retries off.
    #: Connects refused because no server listens (an API server restarting) are bounded by the
    #: deadline and the backoff instead, so a restart shorter than the deadline costs nothing.
    max_attempts: int = _setting(5, functools.partial(_integer, minimum=1))
    #: Full-jitter backoff: the n-th retry (n = 1, 2, ...) waits
    #: uniform(0, min(backoff_max, backoff_base * 2**(n - 1))).
    backoff_base: float = _setting(0.1, _duration_or_zero)
    backoff_max: float = _setting(10.0, _duration)
    #: The longest Retry-After honoured; a server asking for more gets its answer returned.
    retry_after_max: float = _setting(60.0, _duration_or_zero)
    #: Re-send POST and PATCH after the request may have reached the server. Off: a repeat may
    #: create or change twice. Safe for a POST with a fixed metadata.name (a repeat meets 409).
    retry_non_idempotent: bool = _setting(False, _boolean)
    #: Retries may add at most this share of the calls made in the last ``retry_budget_window``
    #: seconds, plus ``retry_budget_min_per_second``. 0.3 masks a 20% failure rate (which needs
    #: 0.25) and caps a total outage at about 1.3x the offered load.
    retry_budget_ratio: float = _setting(0.3, _ratio)
    retry_budget_min_per_second: float = _setting(
        1.0, functools.partial(_duration_or_zero, maximum=1e6)
    )
    retry_budget_window: float = _setting(10.0, _duration)

    # --- client-side rate limit -------------------------------------------------------------
    #: Token bucket: sustained requests per second (None: no limiter) and the burst allowed.
    #: 50/100 is ten times client-go's 5/10.
    qps: float | None = _setting(50.0, _rate)
    burst: int = _setting(100, functools.partial(_integer, minimum=1, maximum=1_000_000))

    # --- DNS cache --------------------------------------------------------------------------
    #: Resolve the API server's name with the local cache (False: the system resolver per connect).
    dns_cache: bool = _setting(True, _boolean)
    #: Resolvers as 'ip[:port]'; None reads /etc/resolv.conf.
    dns_nameservers: tuple[str, ...] | None = _setting(None, _nameservers)
    #: Clamp on record TTLs, the time failures are cached (RFC 2308), how long a stale answer may
    #: be served while the resolver fails (RFC 8767), and the per-query timeout.
    dns_min_ttl: float = _setting(5.0, _duration_or_zero)
    dns_max_ttl: float = _setting(300.0, _duration_or_zero)
    dns_negative_ttl: float = _setting(5.0, _duration_or_zero)
    dns_stale_ttl: float = _setting(86400.0, _duration_or_zero)
    dns_timeout: float = _setting(2.0, _duration)
    #: The search list for a name with fewer dots than ``dns_ndots`` that does not resolve as it
    #: is (``kubernetes.default.svc`` in a pod): walked once, the winner kept for its TTL. None
    #: reads both from /etc/resolv.conf; ``[]`` turns the walk off.
    dns_search: tuple[str, ...] | None = _setting(None, _domains)
    dns_ndots: int | None = _setting(
        None, functools.partial(_optional_integer, minimum=1, maximum=15)
    )

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check: _Check = field.metadata["check"]
            # Frozen: store the normalised value (int or timedelta -> float) behind the guard.
            object.__setattr__(self, field.name, check(field.name, getattr(self, field.name)))
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
    def from_kwargs(cls, base: Settings | None = None, /, **tuning: Unpack[Tuning]) -> Settings:
        """Build settings from keyword arguments, naming any unknown keyword.

        Raises:
            ConfigError: ``base`` is not a ``Settings``, an unknown keyword, or a bad value (the
                message names both).
        """
        if base is not None and not isinstance(base, Settings):
            raise ConfigError(f"settings={base!r} must be a resilient_kube.Settings or None")
        known = {field.name for field in dataclasses.fields(cls)}
        for name, value in tuning.items():
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown tuning argument {name!r}={value!r}{hint}") from None
        # Validated by __post_init__ whatever mypy was told (the values are the caller's).
        changes: dict[str, Any] = dict(tuning)
        return dataclasses.replace(base or DEFAULT_SETTINGS, **changes)

    def replace(self, **changes: Unpack[Tuning]) -> Settings:
        """Return a copy with ``changes`` applied and validated."""
        return Settings.from_kwargs(self, **changes)


#: The defaults, for comparison and for ``Settings.from_kwargs``.
DEFAULT_SETTINGS = Settings()


class Tuning(TypedDict, total=False):
    """The tuning keyword arguments (``ApiClient(**tuning)``), typed as they are accepted.

    Durations are ``float | timedelta`` seconds; ``Settings`` stores them as float.
    """

    connect_timeout: float | timedelta | None
    read_timeout: float | timedelta | None
    deadline: float | timedelta | None
    watch_idle_timeout: float | timedelta | None
    max_response_bytes: int | None
    exec_timeout: float | timedelta
    server_warnings: bool
    pool_maxsize: int
    pool_idle_timeout: float | timedelta | None
    keepalive_idle: float | timedelta | None
    keepalive_interval: float | timedelta
    keepalive_count: int
    tcp_user_timeout: float | timedelta | None
    max_attempts: int
    backoff_base: float | timedelta
    backoff_max: float | timedelta
    retry_after_max: float | timedelta
    retry_non_idempotent: bool
    endpoints: Sequence[str] | None
    health_interval: float | timedelta
    health_timeout: float | timedelta
    eject_after: int
    retry_budget_ratio: float
    retry_budget_min_per_second: float
    retry_budget_window: float | timedelta
    qps: float | None
    burst: int
    dns_cache: bool
    dns_nameservers: Sequence[str] | None
    dns_min_ttl: float | timedelta
    dns_max_ttl: float | timedelta
    dns_negative_ttl: float | timedelta
    dns_stale_ttl: float | timedelta
    dns_timeout: float | timedelta
    dns_search: Sequence[str] | None
    dns_ndots: int | None
