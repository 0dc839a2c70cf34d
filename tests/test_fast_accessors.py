"""The shortcuts the sampling path takes give what the general accessors give: one RF
reading (`rf_reading`) against the dict of all of them, a crystal's frequency alone
(`crystal_frequency_Hz`) against `crystal()`, and the lab's clock (`env_clock`) against
`env.now`; on both tools, before and after a crystal fails."""

import simpy
import simpy.rt

from lipon_hw.engine.lifecycle import env_clock


def _plasma(world, clock):
    tool = world.sputter
    tool.set_pumping(True)
    clock.advance(3 * 3600)
    tool.set_n2_flow_sccm(20.0)
    clock.advance(30)
    tool.set_rf_regulation("load")
    tool.set_rf_setpoint_W(50.0)
    tool.set_rf_output(True)
    return tool


def test_one_rf_reading_is_that_of_all_readings(world, clock):
    tool = world.sputter
    keys = ("forward_W", "reflected_W", "load_W", "dc_bias_V", "setpoint_W", "rf_on")
    assert {k: tool.rf_reading(k) for k in keys} == \
        {k: tool.rf_readings()[k] for k in keys}  # RF off: all zero
    _plasma(world, clock)
    for wait_s in (0.1, 0.5, 2.0, 60.0):  # matching, then matched
        clock.advance(wait_s)
        every = tool.rf_readings()
        assert every["plasma"] and every["load_W"] > 0
        assert {k: tool.rf_reading(k) for k in keys} == {k: every[k] for k in keys}


def test_a_crystal_frequency_alone_is_that_of_its_reading(world, clock):
    tool = _plasma(world, clock)
    clock.advance(600)  # film on the crystal: the frequency has moved
    for t in (world.sputter, world.evaporator):
        reading = t.crystal()
        assert not reading["failed"]
        assert t.crystal_frequency_Hz() == reading["frequency_Hz"]
    tool.s.crystal_failed = True  # what the fault catalogue's crystal failure does
    assert tool.crystal()["failed"] and tool.crystal_frequency_Hz() == 0.0
    world.evaporator.fail_crystal()
    assert world.evaporator.crystal_frequency_Hz() == 0.0


def test_the_lab_clock_reads_the_environments_time():
    env = simpy.Environment(12.5)
    clock = env_clock(env)
    assert clock() == 12.5
    env.run(until=20.0)
    assert clock() == env.now == 20.0
    realtime = simpy.rt.RealtimeEnvironment(3.0, factor=1e-3, strict=False)
    clock = env_clock(realtime)
    realtime.run(until=3.5)
    assert clock() == realtime.now == 3.5
