"""A refusal's Retry-After grows with the sites waiting, so that a crowd refused at once comes
back at about ``retry_rate`` a second in all, not every few seconds each (the account alone:
the 503 it becomes is tested in test_admission.py)."""

from __future__ import annotations

import pytest

from ccctl.media.admission import Admission, AdmissionPolicy, Overloaded, tier_cost

from .conftest import SMALL_TIERS

AUDIO = tier_cost(SMALL_TIERS["audio"], 25)


async def refusal(account: Admission, site: str) -> int:
    with pytest.raises(Overloaded) as caught:
        await account.admit(site, "audio")
    return caught.value.retry_after


@pytest.mark.asyncio
async def test_retry_after_spreads_the_waiting_sites_over_the_retry_rate() -> None:
    policy = AdmissionPolicy(pps_budget=AUDIO, retry_after_s=2, retry_rate=4.0, retry_after_max_s=10, handshakes=0)
    account = Admission(policy, SMALL_TIERS, 25)
    kept = await account.admit("in", "audio")  # the budget holds one site
    account.bound(kept, "s-in", "audio")
    said = [await refusal(account, f"w-{i}") for i in range(60)]
    assert said[:8] == [2] * 8  # a few waiting: the configured floor
    assert said[8:12] == [3] * 4 and said[39] == 10 and said[-1] == 10  # 40 waiting / 4 a second; capped
    assert await refusal(account, "w-0") == 10  # the same site again counts once
    assert account.summary()["waiting_sites"] == 60
    account.on_event("leave", "in", {"session_id": "s-in"})  # room for one: the next admitted leaves the crowd
    admitted = await account.admit("w-5", "audio")
    account.bound(admitted, "s-5", "audio")
    assert account.summary()["waiting_sites"] == 59
    fixed = Admission(AdmissionPolicy(pps_budget=AUDIO, retry_after_s=7, retry_rate=0, handshakes=0), SMALL_TIERS, 25)
    await fixed.admit("in", "audio")
    assert {await refusal(fixed, f"w-{i}") for i in range(50)} == {7}  # retry_rate 0: the fixed Retry-After
