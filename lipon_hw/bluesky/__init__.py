"""bluesky devices for a lipon-hw station (the optional extra `lipon-hw[bluesky]`).

    from bluesky import RunEngine
    from bluesky.plans import count, scan
    from lipon_hw.bluesky import devices

    RE = RunEngine()
    devs = devices(speed=60)                 # the simulated lab, 60x real time
    RE(count([devs["qcm"], devs["chamber_gauge"]], num=5, delay=1))
    RE(scan([devs["process_gauge"]], devs["n2_mfc"], 0, 40, 5))
    devs.close()                             # safe state, links closed

Every instrument of the station whose driver implements a capability of
`lipon_hw.interfaces` becomes an ophyd-async device named after it: readables with
units (`qcm.thickness_nm`, `chamber_gauge.pressure_torr`, `rf.forward_power_W`,
`n2_mfc.flow_sccm`, `substrate_tc.temperature_C`) and movables for setpoints (RF power,
gas flow, source current, the shutter, the valves) bounded by the station's limits.
Every read and write goes through the instrument's driver and the station's
`Link.exchange()`, exactly as a recipe's would. Only this package imports bluesky and
ophyd-async; the rest of lipon-hw runs without them.

Modules: `station_devices` (finding devices by capability, the clock, `devices()`),
`readables` and `movables` (the devices), `backend` (a signal on a driver method),
`limits` (setpoint ranges from the station), `calls` (driver calls off the event loop).
"""

from lipon_hw.extras import needs

with needs("bluesky", "bluesky devices"):
    from lipon_hw.bluesky.movables import ShutterState, ValveState
    from lipon_hw.bluesky.station_devices import StationDevices, devices

__all__ = ["ShutterState", "StationDevices", "ValveState", "devices"]
