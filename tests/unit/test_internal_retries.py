"""Which internal failures Dramatiq's Retries runs again: outages of the store or broker always."""

from __future__ import annotations

from bghttp.errors import BrokerUnavailable, StoreError
from bghttp.worker.actor import INTERNAL_RETRIES, retry_internal_failure


def test_store_and_broker_outages_are_retried_without_limit() -> None:
    for retries in (0, INTERNAL_RETRIES, 10 * INTERNAL_RETRIES):
        assert retry_internal_failure(retries, StoreError("cannot write status: read-only file system"))
        assert retry_internal_failure(retries, BrokerUnavailable("the broker did not confirm"))


def test_other_internal_failures_give_up_after_a_few_tries() -> None:
    assert retry_internal_failure(INTERNAL_RETRIES - 1, RuntimeError("a bug"))
    assert not retry_internal_failure(INTERNAL_RETRIES, RuntimeError("a bug"))
