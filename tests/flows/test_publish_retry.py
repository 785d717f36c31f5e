"""The publish task retries only failures a retry can fix (an unreachable store)."""

from __future__ import annotations

from prefect.states import Failed

from flows.nightly import _transient
from jobs.core.store import StoreError, StoreUnavailable


def test_only_transient_store_failures_are_retried():
    assert _transient(None, None, Failed(data=StoreUnavailable("cannot reach endpoint"))) is True
    assert _transient(None, None, Failed(data=StoreError("access denied"))) is False
    assert _transient(None, None, Failed(data=ConnectionResetError("reset by peer"))) is True
    assert _transient(None, None, Failed(data=ValueError("ban list is missing"))) is False
