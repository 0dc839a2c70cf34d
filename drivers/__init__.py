"""Instrument drivers, one module per real instrument protocol.

`DRIVERS` maps the short names a station file may use to `module:Class`. A station
may name no other module: further drivers are plug-ins registered in the
`lipon_hw.drivers` entry-point group (see `lipon_hw.station`).
"""

DRIVERS = {
    "ae_bus": "lipon_hw.drivers.ae_bus:AEBusGenerator",
    "sqm160": "lipon_hw.drivers.inficon_sqm160:SQM160",
    "mks937b": "lipon_hw.drivers.mks937b:MKS937B",
    "alicat": "lipon_hw.drivers.alicat:AlicatMFC",
    "modbus_relay_shutter": "lipon_hw.drivers.modbus_relay:ModbusRelayShutter",
    "modbus_relay_valves": "lipon_hw.drivers.modbus_relay:ModbusRelayValves",
    "modbus_relay_source_selector": "lipon_hw.drivers.modbus_relay:ModbusRelaySourceSelector",
    "modbus_thermometer": "lipon_hw.drivers.modbus_thermometer:ModbusThermometer",
    "genesys": "lipon_hw.drivers.genesys:GenesysSupply",
    "sqc310": "lipon_hw.drivers.inficon_sqc310:SQC310",
    "keithley2450": "lipon_hw.drivers.keithley2450:Keithley2450",
    "methodscript": "lipon_hw.drivers.methodscript:MethodScriptPotentiostat",
    "grbl_stage": "lipon_hw.drivers.grbl:GrblStage",
}
