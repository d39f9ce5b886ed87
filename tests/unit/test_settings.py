from __future__ import annotations

import dataclasses
import math
import typing
from datetime import timedelta
from typing import Any

import pytest

from resilient_kube import DEFAULT_SETTINGS, ApiClient, ClientFactory, ConfigError, Settings
from resilient_kube._settings import Tuning


def test_defaults_match_the_documented_values() -> None:
    settings = Settings()
    assert (settings.connect_timeout, settings.read_timeout, settings.deadline) == (5.0, 30.0, 60.0)
    assert (settings.qps, settings.burst, settings.max_attempts) == (50.0, 100, 5)
    assert settings.pool_idle_timeout == 30.0
    # A dead idle peer is noticed within 20 s, a dead peer with data in flight within 20 s.
    assert settings.keepalive_idle is not None
    idle_detection = (
        settings.keepalive_idle + settings.keepalive_interval * settings.keepalive_count
    )
    assert idle_detection <= 20.0
    assert settings.tcp_user_timeout is not None
    assert settings.tcp_user_timeout <= 20.0
    assert settings == DEFAULT_SETTINGS


def test_durations_are_normalised_to_float_seconds() -> None:
    # Fields are typed float (what they hold); timedelta is accepted and converted.
    settings = Settings(read_timeout=timedelta(milliseconds=1500), deadline=7)  # type: ignore[arg-type]
    assert settings.read_timeout == 1.5
    assert isinstance(settings.deadline, float)


def test_none_turns_limits_off() -> None:
    settings = Settings(connect_timeout=None, read_timeout=None, deadline=None, qps=None)
    assert settings.deadline is None
    assert settings.qps is None


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("read_timeout", -1, "read_timeout=-1 must be > 0"),
        ("connect_timeout", 0, "connect_timeout=0 must be > 0"),
        ("deadline", math.nan, "deadline=nan must be finite"),
        ("deadline", math.inf, "deadline=inf must be finite"),
        ("read_timeout", True, "read_timeout=True must be a number"),
        ("read_timeout", "5", "read_timeout='5' must be a number"),
        ("max_attempts", 0, "max_attempts=0 must be >= 1"),
        ("max_attempts", 2.5, "max_attempts=2.5 must be an integer"),
        ("pool_maxsize", False, "pool_maxsize=False must be an integer"),
        ("burst", 0, "burst=0 must be >= 1"),
        ("retry_budget_ratio", 1.5, "retry_budget_ratio=1.5 must be between 0 and 1"),
        ("retry_non_idempotent", 1, "retry_non_idempotent=1 must be True or False"),
        ("dns_nameservers", "127.0.0.1", "dns_nameservers='127.0.0.1' must be a non-empty list"),
        ("dns_nameservers", ["resolver"], "dns_nameservers entry 'resolver' is not 'ip[:port]'"),
        ("dns_nameservers", ["127.0.0.1:99999"], "port 99999 out of range"),
        ("qps", -5, "qps=-5 must be > 0"),
        ("backoff_base", 20.0, "backoff_base=20.0 must not exceed backoff_max=10.0"),
        ("dns_min_ttl", 600, "dns_min_ttl=600.0 must not exceed dns_max_ttl=300.0"),
        # Values that every call would fail on later (issue 22, item 6).
        ("keepalive_idle", 43200, "keepalive_idle=43200 must be at most 32767 seconds"),
        ("keepalive_count", 128, "keepalive_count=128 must be at most 127"),
        ("max_attempts", 2**40, "max_attempts=1099511627776 must be at most 2147483647"),
        ("connect_timeout", 1e12, "connect_timeout=1000000000000.0 must be at most 3.1536e+07"),
        ("qps", 1e-300, "qps=1e-300 must be between 0.001 and 1e6"),
        ("backoff_max", 1e308, "backoff_max=1e+308 must be at most"),
        ("deadline", 10**400, "must be finite"),
        ("pool_maxsize", 10**7, "pool_maxsize=10000000 must be at most 10000"),
        ("max_response_bytes", 0, "max_response_bytes=0 must be >= 1"),
        ("dns_nameservers", ["127.0.0.1: 53"], "port ' 53' is not a number"),
        ("dns_nameservers", ["[::1"], "'[' without ']'"),
        ("dns_nameservers", ["[::1]x"], "'x' after ']'"),
        ("watch_idle_timeout", -1, "watch_idle_timeout=-1 must be > 0"),
    ],
)
def test_bad_values_name_the_argument_and_the_value(
    name: str, value: object, fragment: str
) -> None:
    bad: dict[str, Any] = {name: value}
    with pytest.raises(ConfigError, match=None) as caught:
        Settings.from_kwargs(**bad)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_unknown_keyword_is_named_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown tuning argument 'read_timout'=3; did you mean 'read_timeout'\?"
    ):
        Settings.from_kwargs(read_timout=3)  # type: ignore[call-arg]


def test_unknown_keyword_is_rejected_by_the_client_and_the_factory_before_any_io() -> None:
    with pytest.raises(ConfigError, match="qsp"):
        ApiClient(qsp=5)  # type: ignore[call-arg]
    # The factory validates before it looks for a kubeconfig (there is none here).
    with pytest.raises(ConfigError, match="deadline=-2"):
        ClientFactory(kubeconfig="/nonexistent/kubeconfig", deadline=-2)


def test_settings_are_frozen_and_replace_validates() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.qps = 1.0  # type: ignore[misc]
    assert settings.replace(qps=5).qps == 5.0
    with pytest.raises(ConfigError, match="qps=0"):
        settings.replace(qps=0)


def test_repr_reads_back_as_code() -> None:
    settings = Settings(qps=None, dns_nameservers=("127.0.0.1:5353",))
    assert eval(repr(settings), {"Settings": Settings}) == settings


def test_every_field_has_its_own_validator_and_a_typed_keyword() -> None:
    fields = dataclasses.fields(Settings)
    assert all(callable(field.metadata.get("check")) for field in fields)
    assert set(typing.get_type_hints(Tuning)) == {field.name for field in fields}


def test_settings_must_be_settings() -> None:
    with pytest.raises(ConfigError, match=r"settings='x' must be a resilient_kube\.Settings"):
        ApiClient(settings="x")  # type: ignore[arg-type]


def test_bounds_hold_at_the_edge() -> None:
    settings = Settings.from_kwargs(
        keepalive_idle=32767, keepalive_count=127, qps=0.001, pool_maxsize=10_000
    )
    assert (settings.keepalive_idle, settings.keepalive_count) == (32767.0, 127)
    assert Settings.from_kwargs(dns_nameservers=["[::1]:5353", "127.0.0.1:53"]).dns_nameservers
