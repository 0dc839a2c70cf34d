"""Wire emulators, one module per real instrument protocol.

`EMULATORS` maps a driver's short name to the emulator that speaks its bytes.
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
}
