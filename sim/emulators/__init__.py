"""Wire emulators, one module per real instrument protocol.

`EMULATORS` maps a driver's short name to the emulator that speaks its bytes; the
simulated lab builds those as `cls(endpoint, tool, **settings)` on a tool of the World.

`CELL_EMULATORS` maps the potentiostats' drivers to factories that build the instrument
from its cells instead: `factory(name, cells, clock, **settings)`, with `cells` a dict of
channel number (from 1) → cell (`lipon_hw.sim.cells`); the result's `ports[channel]` is
the emulator serving that channel's port (a MultiEmStat4 enumerates one per channel).
"""

EMULATORS = {
    "ae_bus": "lipon_hw.sim.emulators.ae_bus:AEBusEmulator",
    "sqm160": "lipon_hw.sim.emulators.inficon_sqm160:SQM160Emulator",
    "mks937b": "lipon_hw.sim.emulators.mks937b:MKS937BEmulator",
    "alicat": "lipon_hw.sim.emulators.alicat:AlicatEmulator",
    "modbus_relay_shutter": "lipon_hw.sim.emulators.modbus_relay:ModbusRelayEmulator",
    "modbus_relay_valves": "lipon_hw.sim.emulators.modbus_relay:ModbusRelayEmulator",
    "modbus_relay_source_selector": "lipon_hw.sim.emulators.modbus_relay:ModbusRelayEmulator",
    "modbus_thermometer": "lipon_hw.sim.emulators.modbus_thermometer:ModbusThermometerEmulator",
    "genesys": "lipon_hw.sim.emulators.genesys:GenesysEmulator",
    "sqc310": "lipon_hw.sim.emulators.inficon_sqc310:SQC310Emulator",
    "grbl_stage": "lipon_hw.sim.emulators.grbl:GrblEmulator",
}

CELL_EMULATORS = {
    "methodscript": "lipon_hw.sim.emulators.methodscript:MethodScriptEmulator",
    "keithley2450": "lipon_hw.sim.emulators.keithley2450:Keithley2450Emulator.from_cells",
}
