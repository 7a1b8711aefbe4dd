"""STATUSD_REDIS_MODE and its companions: a bad or incomplete value is one line naming the
variable (statusd.settings_loader), never a traceback at the first Redis call."""

from __future__ import annotations

import os

import pytest

from statusd.errors import ConfigError
from statusd.settings import RedisMode
from statusd.settings_loader import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STATUSD_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STATUSD_REDIS_MODE": "sharded"}, "STATUSD_REDIS_MODE"),
        ({"STATUSD_REDIS_MODE": "sentinel"}, "STATUSD_REDIS_SENTINELS"),
        (
            {"STATUSD_REDIS_MODE": "sentinel", "STATUSD_REDIS_SENTINELS": "10.0.0.1:26379"},
            "STATUSD_REDIS_SENTINEL_MASTER",
        ),
        ({"STATUSD_REDIS_SENTINELS": "10.0.0.1"}, "STATUSD_REDIS_SENTINELS"),
        ({"STATUSD_REDIS_SENTINELS": "10.0.0.1:99999"}, "STATUSD_REDIS_SENTINELS"),
        ({"STATUSD_REDIS_MODE": "cluster"}, "STATUSD_REDIS_URL"),
        ({"STATUSD_REDIS_MIN_REPLICA_ACKS": "-1"}, "STATUSD_REDIS_MIN_REPLICA_ACKS"),
    ],
)
def test_bad_redis_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message and named in message, message


def test_sentinel_settings_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATUSD_REDIS_MODE", "sentinel")
    monkeypatch.setenv("STATUSD_REDIS_SENTINELS", "10.0.0.1:26379, redis-s2:26380")
    monkeypatch.setenv("STATUSD_REDIS_SENTINEL_MASTER", "statusd")
    settings = load_settings()
    assert settings.redis_mode is RedisMode.SENTINEL
    assert settings.redis_sentinels == ["10.0.0.1:26379", "redis-s2:26380"]


def test_a_cluster_is_never_the_celery_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATUSD_REDIS_MODE", "cluster")
    monkeypatch.setenv("STATUSD_REDIS_URL", "redis://10.0.0.1:7000/0")
    with pytest.raises(ConfigError, match="STATUSD_BROKER_URL"):
        _ = load_settings().effective_broker_url
    monkeypatch.setenv("STATUSD_BROKER_URL", "amqp://rabbit/")
    assert load_settings().effective_broker_url == "amqp://rabbit/"
