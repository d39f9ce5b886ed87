from __future__ import annotations

import math
from datetime import timedelta

import pytest

from resilient_kube import DEFAULT_SETTINGS, ApiClient, ClientFactory, ConfigError, Settings


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
    ],
)
def test_bad_values_name_the_argument_and_the_value(
    name: str, value: object, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        Settings.from_kwargs(**{name: value})
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_unknown_keyword_is_named_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown tuning argument 'read_timout'=3; did you mean 'read_timeout'\?"
    ):
        Settings.from_kwargs(read_timout=3)


def test_unknown_keyword_is_rejected_by_the_client_and_the_factory_before_any_io() -> None:
    with pytest.raises(ConfigError, match="qsp"):
        ApiClient(qsp=5)
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
