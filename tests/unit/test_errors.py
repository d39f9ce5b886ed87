from __future__ import annotations

import pickle

import pytest
import urllib3.exceptions as u3

from resilient_kube import errors


@pytest.mark.parametrize(
    "error",
    [
        errors.ReadTimeout(
            "read timeout",
            method="GET",
            url="/x",
            attempts=4,
            last_error=u3.ReadTimeoutError(None, "/x", "t"),  # type: ignore[arg-type]
        ),
        errors.RateLimitTimeout("throttled", wait=2.5, method="GET", attempts=1),
        errors.NameResolutionError("no such host", host="api.kube.test", attempts=5),
        errors.ConnectionReset("reset", attempts=2, last_error=ConnectionResetError(104, "reset")),
        errors.RetryBudgetExhausted("budget", attempts=1),
        errors.DeadlineExceeded("deadline", attempts=3),
    ],
)
def test_errors_survive_pickling_with_their_context(error: errors.TransportError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__.keys() == error.__dict__.keys()
    assert copy.attempts == error.attempts
    assert type(copy.last_error) is type(error.last_error)


def test_every_transport_error_is_a_urllib3_max_retry_error() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if issubclass(cls, errors.TransportError):
            assert issubclass(cls, u3.MaxRetryError)
    assert issubclass(errors.ConnectTimeout, u3.ConnectTimeoutError)
    assert issubclass(errors.ReadTimeout, u3.ReadTimeoutError)
    assert issubclass(errors.ConnectionReset, u3.ProtocolError)
    assert issubclass(errors.ConnectError, u3.NewConnectionError)
    assert issubclass(errors.ConfigError, ValueError)
