"""Settings: validation, and reading them from the environment."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from tenure.config import ENV_NAMES, Settings
from tenure.errors import InvalidSettings
from tenure.models import DEFAULT_MAX_PARAMS_BYTES

TIMES = ["lease_ttl", "heartbeat", "poll", "grace", "trust_margin", "run_retention"]
NOT_A_TIME: list[Any] = [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "1", None]


def test_defaults_are_valid_and_documented() -> None:
    s = Settings()
    assert (s.lease_ttl, s.heartbeat, s.poll, s.grace, s.trust_margin) == (10.0, 2.0, 1.0, 10.0, 1.0)
    assert s.takeover_delay == 0.0
    assert s.run_retention == 7 * 86400.0
    assert s.max_params_bytes == DEFAULT_MAX_PARAMS_BYTES
    assert s.worker_id is None
    assert s.admin_token is None
    assert set(ENV_NAMES) == {f.name for f in dataclasses.fields(Settings)}


@pytest.mark.parametrize("name", TIMES)
def test_times_must_be_positive_numbers(name: str) -> None:
    for value in NOT_A_TIME:
        with pytest.raises(InvalidSettings, match=name):
            Settings(**{name: value})


def test_takeover_delay_may_be_zero_but_not_negative() -> None:
    assert Settings(takeover_delay=0).takeover_delay == 0
    assert Settings(takeover_delay=2.5).takeover_delay == 2.5
    bad: list[Any] = [-0.1, math.nan, math.inf, True, "1", None]
    for value in bad:
        with pytest.raises(InvalidSettings, match="takeover_delay"):
            Settings(takeover_delay=value)


def test_lease_ttl_minimum() -> None:
    with pytest.raises(InvalidSettings, match=r"lease_ttl 0\.4s is below the minimum"):
        Settings(lease_ttl=0.4, heartbeat=0.1, trust_margin=0.05)
    s = Settings(lease_ttl=0.5, heartbeat=0.25, trust_margin=0.1)
    assert s.lease_ttl == 0.5


@pytest.mark.parametrize("name", ["poll", "heartbeat"])
def test_poll_and_heartbeat_have_a_floor(name: str) -> None:
    """A poll of a nanosecond was accepted, and an idle worker kept a core busy."""
    with pytest.raises(InvalidSettings, match=rf"{name} 0\.01s is below the minimum of 0\.05s"):
        Settings().with_changes(**{name: 0.01})
    assert getattr(Settings().with_changes(**{name: 0.05}), name) == 0.05


def test_heartbeat_at_most_half_the_ttl() -> None:
    assert Settings(lease_ttl=10, heartbeat=5, trust_margin=1).heartbeat == 5
    with pytest.raises(InvalidSettings, match=r"heartbeat 5\.01s must be at most half of lease_ttl 10"):
        Settings(lease_ttl=10, heartbeat=5.01, trust_margin=1)
    with pytest.raises(InvalidSettings, match="heartbeat"):
        Settings(lease_ttl=3)  # default heartbeat 2 s is more than half


def test_trust_margin_below_ttl_minus_heartbeat() -> None:
    assert Settings(lease_ttl=10, heartbeat=2, trust_margin=7.9).trust_margin == 7.9
    with pytest.raises(InvalidSettings, match=r"trust_margin 8\.0s must be below lease_ttl - heartbeat"):
        Settings(lease_ttl=10, heartbeat=2, trust_margin=8.0)


def test_max_params_bytes() -> None:
    assert Settings(max_params_bytes=2).max_params_bytes == 2
    assert Settings(max_params_bytes=16 * 1024 * 1024).max_params_bytes == 16 * 1024 * 1024
    bad: list[Any] = [True, 1024.0, "1024", None, 1, 0, -5, 16 * 1024 * 1024 + 1]
    for value in bad:
        with pytest.raises(InvalidSettings, match="max_params_bytes"):
            Settings(max_params_bytes=value)


def test_concurrency() -> None:
    assert Settings().concurrency == 100
    assert Settings(concurrency=1).concurrency == 1
    bad: list[Any] = [True, 2.0, "4", None, 0, -1, 100_001]
    for value in bad:
        with pytest.raises(InvalidSettings, match="concurrency"):
            Settings(concurrency=value)


def test_timer_grid() -> None:
    assert Settings().timer_grid == 0.004
    assert Settings(timer_grid=0.001).timer_grid == 0.001
    assert Settings(timer_grid=1).timer_grid == 1
    bad: list[Any] = [True, "0.05", None, 0, 0.0009, -0.05, 1.5, math.nan, math.inf]
    for value in bad:
        with pytest.raises(InvalidSettings, match="timer_grid"):
            Settings(timer_grid=value)


def test_worker_id() -> None:
    assert Settings(worker_id="box-1:4242").worker_id == "box-1:4242"
    assert Settings(worker_id="w" * 200).worker_id == "w" * 200
    assert Settings(worker_id="Zürich ü-1").worker_id == "Zürich ü-1"
    bad: list[Any] = ["", "   ", "w" * 201, "a\nb", "tab\t", "\x1b[0m", 42, b"w1"]
    for value in bad:
        with pytest.raises(InvalidSettings, match="worker_id"):
            Settings(worker_id=value)


def test_admin_token_is_kept_out_of_repr() -> None:
    token = "s3cret-token"  # noqa: S105 - a test value
    s = Settings(admin_token=token)
    assert s.admin_token == token
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize("token", ["pässwörd", "tab\tinside", "new\nline", "nul\x00", "\udcff", " ", "x "])
def test_an_admin_token_no_header_can_carry_is_refused(token: str) -> None:
    """Header values arrive as latin-1 bytes, compared with the token's UTF-8 bytes (issue
    16 case 5): a token outside printable ASCII could never match, and every action
    answered 403 without a hint. The message never shows the token."""
    with pytest.raises(InvalidSettings, match="admin_token") as info:
        Settings(admin_token=token)
    assert "pässwörd" not in str(info.value)


def test_settings_are_frozen_and_keyword_only() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lease_ttl = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        Settings(10.0)  # type: ignore[call-arg]


def test_with_changes_validates_again() -> None:
    s = Settings()
    changed = s.with_changes(lease_ttl=30.0, heartbeat=5.0)
    assert (changed.lease_ttl, changed.heartbeat) == (30.0, 5.0)
    assert (s.lease_ttl, s.heartbeat) == (10.0, 2.0)  # the original is untouched
    with pytest.raises(InvalidSettings, match="heartbeat"):
        s.with_changes(heartbeat=9.0)
    with pytest.raises(InvalidSettings, match="poll"):
        s.with_changes(poll=-1)


# -- from_env ------------------------------------------------------------------------------


def test_from_env_empty_is_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_reads_every_variable() -> None:
    env = {
        "TENURE_LEASE_TTL": "20",
        "TENURE_HEARTBEAT": "4.5",
        "TENURE_POLL": "0.25",
        "TENURE_GRACE": "3",
        "TENURE_TRUST_MARGIN": "1.5",
        "TENURE_TAKEOVER_DELAY": "0.75",
        "TENURE_RUN_RETENTION": "3600",
        "TENURE_MAX_PARAMS_BYTES": "2048",
        "TENURE_CONCURRENCY": "8",
        "TENURE_TIMER_GRID": "0.05",
        "TENURE_WORKER_ID": "box-1",
        "TENURE_ADMIN_TOKEN": "t0ken",
        "TENURE_STORE": "sqlite:///elsewhere.db",  # not a worker setting: ignored here
        "HOME": "/root",
    }
    s = Settings.from_env(env)
    assert s == Settings(
        lease_ttl=20.0,
        heartbeat=4.5,
        poll=0.25,
        grace=3.0,
        trust_margin=1.5,
        takeover_delay=0.75,
        run_retention=3600.0,
        max_params_bytes=2048,
        concurrency=8,
        timer_grid=0.05,
        worker_id="box-1",
        admin_token=env["TENURE_ADMIN_TOKEN"],
    )
    assert isinstance(s.max_params_bytes, int)
    assert isinstance(s.lease_ttl, float)


def test_from_env_ignores_empty_values() -> None:
    env = dict.fromkeys(ENV_NAMES.values(), "")
    assert Settings.from_env(env) == Settings()


def test_from_env_overrides_win_and_none_overrides_do_not() -> None:
    env = {"TENURE_LEASE_TTL": "20", "TENURE_POLL": "0.5", "TENURE_WORKER_ID": "from-env"}
    s = Settings.from_env(env, lease_ttl=30.0, poll=None, worker_id="from-flag", grace=None)
    assert s.lease_ttl == 30.0  # the flag's
    assert s.poll == 0.5  # the environment's: a None override means "not given"
    assert s.worker_id == "from-flag"
    assert s.grace == 10.0  # the default


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("TENURE_LEASE_TTL", "ten"),
        ("TENURE_HEARTBEAT", "2s"),
        ("TENURE_POLL", "1,5"),
        ("TENURE_GRACE", "--"),
        ("TENURE_TAKEOVER_DELAY", "soon"),
        ("TENURE_MAX_PARAMS_BYTES", "64k"),
        ("TENURE_MAX_PARAMS_BYTES", "1.5"),
        ("TENURE_CONCURRENCY", "1.5"),
        ("TENURE_CONCURRENCY", "many"),
        ("TENURE_TIMER_GRID", "50ms"),
    ],
)
def test_from_env_refuses_non_numbers_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(InvalidSettings) as info:
        Settings.from_env({variable: raw})
    assert variable in str(info.value)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TENURE_LEASE_TTL": "nan"}, "TENURE_LEASE_TTL"),
        ({"TENURE_LEASE_TTL": "inf"}, "TENURE_LEASE_TTL"),
        ({"TENURE_LEASE_TTL": "-5"}, "TENURE_LEASE_TTL"),
        ({"TENURE_LEASE_TTL": "0.1"}, "TENURE_LEASE_TTL"),
        ({"TENURE_POLL": "0"}, "TENURE_POLL"),
        ({"TENURE_POLL": "1e-9"}, "TENURE_POLL"),
        ({"TENURE_HEARTBEAT": "0.01"}, "TENURE_HEARTBEAT"),
        ({"TENURE_GRACE": "-1"}, "TENURE_GRACE"),
        ({"TENURE_RUN_RETENTION": "1e400"}, "TENURE_RUN_RETENTION"),
        ({"TENURE_TAKEOVER_DELAY": "-0.5"}, "TENURE_TAKEOVER_DELAY"),
        ({"TENURE_HEARTBEAT": "9"}, "TENURE_HEARTBEAT"),  # more than half the default TTL
        ({"TENURE_TRUST_MARGIN": "8"}, "TENURE_TRUST_MARGIN"),
        ({"TENURE_MAX_PARAMS_BYTES": "1"}, "TENURE_MAX_PARAMS_BYTES"),
        ({"TENURE_CONCURRENCY": "0"}, "TENURE_CONCURRENCY"),
        ({"TENURE_TIMER_GRID": "0"}, "TENURE_TIMER_GRID"),
        ({"TENURE_TIMER_GRID": "2"}, "TENURE_TIMER_GRID"),
        ({"TENURE_WORKER_ID": "   "}, "TENURE_WORKER_ID"),
        ({"TENURE_WORKER_ID": "a\x1bb"}, "TENURE_WORKER_ID"),
    ],
)
def test_from_env_refuses_bad_values_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(InvalidSettings) as info:
        Settings.from_env(env)
    assert variable in str(info.value)


def test_from_env_inconsistent_values_name_every_variable_involved() -> None:
    env = {"TENURE_LEASE_TTL": "4", "TENURE_HEARTBEAT": "3"}
    with pytest.raises(InvalidSettings) as info:
        Settings.from_env(env)
    assert "TENURE_LEASE_TTL" in str(info.value)
    assert "TENURE_HEARTBEAT" in str(info.value)
    # A flag that fixes it wins over the environment, and then nothing is wrong.
    assert Settings.from_env(env, heartbeat=1.0).heartbeat == 1.0


def test_from_env_blames_the_flag_not_the_environment() -> None:
    # The bad value came from an override (a CLI flag): no variable is to blame.
    with pytest.raises(InvalidSettings) as info:
        Settings.from_env({"TENURE_POLL": "0.5"}, lease_ttl=-1.0)
    assert "lease_ttl" in str(info.value)
    assert "TENURE_" not in str(info.value)
