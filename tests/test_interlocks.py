import pytest

from lipon_hw.engine.conditions import parse_condition

KNOWN = {"rf.forward_power_W": "rf_supply", "rf.reflected_power_W": "rf_supply",
         "g1.pressure_torr": "base_gauge", "g2.pressure_torr": "process_gauge"}


def test_condition_must_persist_for_its_duration():
    lock = parse_condition("reflected_power_W > 0.1 * forward_power_W for 5 s", KNOWN)
    bad = {"rf.forward_power_W": 50, "rf.reflected_power_W": 10}
    assert not lock.check(0, bad)
    assert not lock.check(4, bad)
    assert lock.check(5, bad)
    assert not lock.check(6, {"rf.forward_power_W": 50, "rf.reflected_power_W": 1})
    assert not lock.check(11, bad)


def test_boolean_and_qualified_names():
    lock = parse_condition("g2.pressure_torr > 0.03 or not rf.forward_power_W >= 0", KNOWN)
    assert lock.check(0, {"g2.pressure_torr": 0.05, "rf.forward_power_W": 1})
    assert not lock.check(0, {"g2.pressure_torr": 0.01, "rf.forward_power_W": 1})


def test_missing_reading_is_not_a_trip():
    lock = parse_condition("g1.pressure_torr > 1", KNOWN)
    assert not lock.check(0, {})


@pytest.mark.parametrize("text, words", [
    ("__import__('os').system('x') > 0", "not allowed"),
    ("rf.forward_power_W >", "not a valid condition"),
    ("pressure_torr > 1", "ambiguous"),
    ("nope > 1", "not a recorded quantity"),
])
def test_refusals(text, words):
    with pytest.raises(ValueError, match=words):
        parse_condition(text, KNOWN)
