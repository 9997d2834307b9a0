"""The fault spec: its syntax, its errors and its repeatable assignment."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ccctl.sim.faults import Fault, FaultSpec, Share, parse_fault_spec, share_count

EXAMPLE = "down=2%,blackhole=1%,slow=3%:800,flap=1%,authfail=1%,hostkey=1%,nocam=2%"
IDS = [f"site-{i:04d}" for i in range(1000)]


def test_parse_example_shares_in_order() -> None:
    spec = parse_fault_spec(EXAMPLE + ",seed=7")
    assert spec.seed == 7
    assert spec.shares == (
        Share(Fault("down"), 2), Share(Fault("blackhole"), 1), Share(Fault("slow", 800), 3),
        Share(Fault("flap"), 1), Share(Fault("authfail"), 1), Share(Fault("hostkey"), 1),
        Share(Fault("nocam"), 2),
    )
    assert spec.sites == {}


def test_parse_site_items_and_args() -> None:
    spec = parse_fault_spec(" hn-01.xa_3=authfail , B2=slow:250, c3=loss:2.5, d4=bwcap:512, "
                            "down=DISKFULL")
    assert spec.seed == 0
    assert spec.shares == ()
    assert spec.sites == {
        "hn-01.xa_3": Fault("authfail"), "B2": Fault("slow", 250), "c3": Fault("loss", 2.5),
        "d4": Fault("bwcap", 512), "down": Fault("diskfull"),
    }
    assert [str(f) for f in spec.sites.values()] == [
        "authfail", "slow:250", "loss:2.5", "bwcap:512", "diskfull",
    ]
    assert spec.sites["B2"].slow_ms == 250
    assert spec.sites["c3"].slow_ms == 0


def test_empty_spec_means_no_faults() -> None:
    assert parse_fault_spec("  ").assign(IDS) == {}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("down", "'down'"),
        ("down=", "'down='"),
        ("bogus=2%", "unknown fault kind 'bogus'"),
        ("site1=bogus", "unknown fault kind 'bogus' in 'site1=bogus'"),
        ("down=2%,,flap=1%", "empty item"),
        ("down=x%", "'down=x%'"),
        ("down=-1%", "'down=-1%'"),
        ("down=101%", "over 100%"),
        ("down=60%,flap=50%", "more than 100%"),
        ("slow=3%", "needs :milliseconds"),
        ("slow=3%:fast", "bad milliseconds 'fast'"),
        ("slow=3%:0", "between 1 and 600000"),
        ("loss=1%:101", "between 0 and 100"),
        ("down=2%:5", "takes no argument"),
        ("s1=nocam:1", "takes no argument, in 's1=nocam:1'"),
        ("bad/site=down", "bad site id 'bad/site'"),
        ("s1=down,s1=flap", "site 's1' given a fault twice"),
        ("seed=x", "bad seed 'x'"),
        ("seed=1,seed=2", "seed given twice"),
    ],
)
def test_bad_specs_name_the_item(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_fault_spec(spec)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_assign_counts_and_distinct_sites() -> None:
    assigned = parse_fault_spec(EXAMPLE).assign(IDS)
    kinds = Counter(fault.kind for fault in assigned.values())
    assert kinds == {"down": 20, "blackhole": 10, "slow": 30, "flap": 10, "authfail": 10,
                     "hostkey": 10, "nocam": 20}
    assert all(fault == Fault("slow", 800) for fault in assigned.values() if fault.kind == "slow")


def test_assign_is_deterministic_whatever_the_input_order() -> None:
    spec = parse_fault_spec(EXAMPLE + ",seed=3")
    shuffled = list(IDS)
    random.Random(99).shuffle(shuffled)
    first = spec.assign(IDS)
    assert spec.assign(shuffled) == first
    assert parse_fault_spec(EXAMPLE + ",seed=3").assign(IDS + IDS[:5]) == first


def test_seed_changes_the_choice() -> None:
    assert (parse_fault_spec(EXAMPLE + ",seed=1").assign(IDS)
            != parse_fault_spec(EXAMPLE + ",seed=2").assign(IDS))


def test_rounding_down_but_at_least_one() -> None:
    assert share_count(2, 1000) == 20
    assert share_count(29, 100) == 29  # no float drift: 0.29 * 100 < 29
    assert share_count(2.5, 99) == 2
    assert share_count(1, 10) == 1
    assert share_count(0.01, 3) == 1
    assert share_count(0, 1000) == 0
    assert share_count(5, 0) == 0
    assigned = parse_fault_spec("down=1%,flap=1%").assign(["a", "b", "c"])
    assert sorted(f.kind for f in assigned.values()) == ["down", "flap"]


def test_shares_never_exceed_the_sites() -> None:
    assigned = parse_fault_spec("down=50%,flap=50%").assign(["a"])
    assert assigned == {"a": Fault("down")}


def test_site_items_override_shares_and_ignore_unknown_ids() -> None:
    spec = parse_fault_spec("down=100%,site-0005=nocam,nowhere=flap")
    assigned = spec.assign(IDS[:10])
    assert assigned["site-0005"] == Fault("nocam")
    assert sum(1 for f in assigned.values() if f.kind == "down") == 9
    assert "nowhere" not in assigned


def test_spec_is_a_plain_value() -> None:
    assert parse_fault_spec("seed=0") == FaultSpec()
