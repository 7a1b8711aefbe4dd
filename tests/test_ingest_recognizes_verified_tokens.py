"""Ingest keeps the tokens it verified, so a container's every heartbeat after the first costs a
lookup, not an HMAC (statusd.ingest.heartbeat_checks). What must not change: a token that does not
verify is refused every time, however close it is to one that did, and a token is only ever
recognized under the secret that signed it."""

from __future__ import annotations

import pytest

from statusd import tokens
from statusd.errors import BadInput
from statusd.ingest import heartbeat_checks
from statusd.lifecycle import Kind

SECRET = b"k" * 40


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    heartbeat_checks._verified.cache_clear()


def test_a_verified_token_is_recognized_afterwards() -> None:
    token = tokens.issue(SECRET, "train-1", Kind.TRAINING, 3)
    first = heartbeat_checks.claims_from_token(token, (SECRET,))
    again = heartbeat_checks.claims_from_token(token, (SECRET,))
    assert first == again == tokens.TokenClaims("train-1", Kind.TRAINING, 3)
    info = heartbeat_checks._verified.cache_info()
    assert (info.hits, info.misses) == (1, 1)


def test_a_token_that_does_not_verify_is_refused_every_time() -> None:
    good = tokens.issue(SECRET, "train-1", Kind.TRAINING, 3)
    heartbeat_checks.claims_from_token(good, (SECRET,))
    *head, mac = good.split(".")
    forged = [
        ".".join([*head, ("A" if mac[0] != "A" else "B") + mac[1:]]),  # signature changed
        good.replace(".3.", ".4."),  # a later generation claimed with the old signature
        good.replace(".training.", ".deployment."),  # another kind
    ]
    for token in forged * 2:
        with pytest.raises(BadInput) as refused:
            heartbeat_checks.claims_from_token(token, (SECRET,))
        assert refused.value.status == 401
    assert heartbeat_checks._verified.cache_info().currsize == 1  # only the good one is kept


def test_a_token_is_recognized_only_under_the_secret_that_signed_it() -> None:
    token = tokens.issue(SECRET, "train-1", Kind.TRAINING, 1)
    heartbeat_checks.claims_from_token(token, (SECRET,))
    with pytest.raises(BadInput):
        heartbeat_checks.claims_from_token(token, (b"another-secret-" + b"x" * 30,))


def test_the_cache_is_bounded() -> None:
    assert heartbeat_checks._verified.cache_info().maxsize == heartbeat_checks.VERIFIED_TOKENS
    for n in range(100):
        heartbeat_checks.claims_from_token(
            tokens.issue(SECRET, f"w-{n}", Kind.NOTEBOOK, 1), (SECRET,)
        )
    assert heartbeat_checks._verified.cache_info().currsize == 100
