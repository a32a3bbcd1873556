"""Services refuse development secrets when they are reachable or in production."""

from __future__ import annotations

import logging

import pytest

from fnbus.config import DEFAULT_DEV_SECRET, Settings
from fnbus.secrets_check import InsecureSecrets, check_secrets, exposed, is_loopback, weak_secrets
from fnbus.service import create_service_app

STRONG = {"service_token": "s" * 43, "jwt_secret": "j" * 43, "secrets_key": "k" * 43}


def _settings(**changes: object) -> Settings:
    # _env_file=None: the developer's .fnbus/secrets.env must not leak into the test.
    return Settings(_env_file=None, **{**STRONG, **changes})  # type: ignore[call-arg]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "192.168.1.2", "gateway", ""])
def test_other_hosts_are_exposed(host: str) -> None:
    assert not is_loopback(host)
    assert exposed(_settings(bind_host=host))


def test_production_is_exposed_even_on_loopback() -> None:
    assert exposed(_settings(env="production"))
    assert exposed(_settings(env=" Production "))
    assert not exposed(_settings())


@pytest.mark.parametrize("bad", ["", "   ", DEFAULT_DEV_SECRET, "short-secret"])
@pytest.mark.parametrize("name", ["service_token", "jwt_secret", "secrets_key"])
def test_each_weak_secret_is_named(name: str, bad: str) -> None:
    assert weak_secrets(_settings(**{name: bad})) == [name]


@pytest.mark.parametrize("changes", [{"bind_host": "0.0.0.0"}, {"env": "production"}])
@pytest.mark.parametrize("weak", ["service_token", "jwt_secret", "secrets_key"])
def test_exposed_services_refuse_to_start(changes: dict[str, str], weak: str) -> None:
    settings = _settings(**changes, **{weak: DEFAULT_DEV_SECRET})
    with pytest.raises(InsecureSecrets) as raised:
        create_service_app("gateway", settings)
    message = str(raised.value)
    assert f"FNBUS_{weak.upper()}" in message
    assert DEFAULT_DEV_SECRET not in message  # never echo a secret


def test_the_built_in_defaults_refuse_in_production() -> None:
    defaults = Settings(_env_file=None, env="production")  # type: ignore[call-arg]
    with pytest.raises(InsecureSecrets) as raised:
        check_secrets(defaults, "registry")
    assert "FNBUS_SERVICE_TOKEN, FNBUS_JWT_SECRET, FNBUS_SECRETS_KEY" in str(raised.value)


def test_strong_secrets_start_anywhere() -> None:
    check_secrets(_settings(bind_host="0.0.0.0", env="production"), "gateway")
    create_service_app("gateway", _settings(bind_host="0.0.0.0"))


def test_loopback_development_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fnbus.secrets_check"):
        create_service_app("invoker", _settings(jwt_secret=DEFAULT_DEV_SECRET))
    assert any("development secrets" in r.getMessage() for r in caplog.records)
