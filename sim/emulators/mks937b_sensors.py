"""The MKS 937B emulator's sensors and relays: what each channel reads from its tool's
chamber pressure, the ion gauge's status under protection and control, and the twelve set
point relays (two per channel) with their hysteresis.

Slot A holds a cold cathode (channel 1) and a Pirani (channel 2), slot B a 0.1 Torr
capacitance manometer (channel 3); channels 4–6 are empty. Channel 1 reads as the
combination of the cold cathode with its Pirani (1e-9..1000 Torr, the reading this lab's
drivers take), with a gas calibration off by a factor drawn once per controller (within
±15 %, as a cold cathode on an uncorrected gas is) times the gas correction factor `UC1`,
and 1 % reading noise; channel 2 is the Pirani alone (5e-4..1000 Torr, ±2 %). Channel 3:
±0.25 % of reading, `LO` below 1e-5 Torr, clipped at full scale. An empty channel reads
`MISCONN`, a channel switched off `OFF` (assumptions, see the driver).

The cold cathode is on only below its protection set point (`PRO1`, default 5e-3 Torr)
and, with control on (`CTL1` AUTO or SAFE, controlled by `CSE1`, default A2 — its Pirani),
below the control set point `CSP1` (turned off again above `CHP1`); its status `T1` is G
(on), P (protect), C (held off by its controlling gauge) or O (off). The combination's
reading does not depend on it: the Pirani covers what the cold cathode does not.

A relay follows its channel's reading: direction BELOW energises it (SET) below the set
point `SP` and de-energises it above the hysteresis value `SH`; ABOVE the other way round.
Enable `EN`: ENABLE (follows the reading), SET or CLEAR (forced). Setting SP or SD puts
SH at 10 % beyond SP (the auto hysteresis pymeasure describes); defaults: SP 1e-3 Torr
(below the range of no sensor here), BELOW, CLEAR (unverified). The relays drive nothing
in the simulated lab.
"""

from __future__ import annotations

CHANNELS = range(1, 7)
RELAYS = range(1, 13)
ION_GAUGES = (1, 3, 5)  # the channels that can hold one (slots A, B, C first position)
SENSORS = {1: "CC", 2: "PR", 3: "CM"}  # channel → sensor; the rest are empty
#: (low, high) Torr each sensor reads, for set points and readings
SENSOR_RANGE_TORR = {"CC": (1e-9, 1000.0), "PR": (5e-4, 1000.0), "CM": (1e-5, 0.1)}
PROTECTION_RANGE_TORR = (1e-5, 1e-2)
CONTROL_RANGE_TORR = (5e-4, 1e-2)
HYSTERESIS_RANGE_TORR = (5.5e-4, 1.1e-2)
SOURCES = {"A1": 1, "A2": 2, "B1": 3, "B2": 4, "C1": 5, "C2": 6}


def relay_channel(relay: int) -> int:
    """Relays 1 and 2 follow channel 1, 3 and 4 channel 2, …"""
    return (relay + 1) // 2


def default_state() -> dict:
    return {
        "protection": {"1": 5e-3},
        "control": {"1": {"setpoint": 2e-3, "hysteresis": 3e-3, "source": "A2",
                          "mode": "AUTO", "extended": "OFF"}},
        "gas_correction": {"1": 1.0},
        "gas_type": {"1": "Nitrogen"},
        "cc_on": {"1": False},
        "relays": {str(r): {"setpoint": 1e-3, "hysteresis": 1.1e-3, "direction": "BELOW",
                            "enable": "CLEAR", "energised": False} for r in RELAYS},
    }


class Sensors:
    """Readings, ion-gauge status and relays of `self` (the emulator): `self.tool`,
    `self.calibration`, `self.power`, `self.state` (default_state())."""

    def true_torr(self) -> float:
        return self.tool.pressure_torr()

    def reading_torr(self, channel: int) -> float | str:
        """A channel's reading in Torr, or the word it shows."""
        sensor = SENSORS.get(channel)
        if sensor is None:
            return "MISCONN"
        if not self.power[channel]:
            return "OFF"
        rng = self.tool.world.rng
        true = self.true_torr()
        low, high = SENSOR_RANGE_TORR[sensor]
        if sensor == "CM":
            if true < low:
                return "LO"
            return min(true * (1 + rng.uniform(-0.0025, 0.0025)), high)
        if sensor == "PR":
            torr = true * (1 + rng.normal(0, 0.02))
        else:
            torr = self._cc_true() * (1 + rng.normal(0, 0.01))
        if torr < low:
            return "LO"
        if torr > high:
            return "ATM"
        return torr

    def _cc_true(self) -> float:
        return self.true_torr() * self.calibration * self.state["gas_correction"]["1"]

    def ion_status(self, channel: int) -> str:
        """W, O, G, P, C or R of the ion gauge on `channel` (only channel 1 holds one)."""
        if not self.power[channel]:
            self.state["cc_on"]["1"] = False
            return "O"
        torr = self._cc_true()
        if torr > self.state["protection"]["1"]:
            self.state["cc_on"]["1"] = False
            return "P"
        control = self.state["control"]["1"]
        if control["mode"] != "OFF" and control["source"] != "OFF":
            controlling = self.true_torr() if SOURCES[control["source"]] in SENSORS else None
            if controlling is None:
                self.state["cc_on"]["1"] = False
                return "C"
            if controlling > control["hysteresis"]:
                self.state["cc_on"]["1"] = False
            elif controlling < control["setpoint"] and control["mode"] == "AUTO":
                self.state["cc_on"]["1"] = True
            if not self.state["cc_on"]["1"]:
                return "C"
        else:
            self.state["cc_on"]["1"] = True
        return "G"

    def relay_status(self, relay: int) -> str:
        """SET or CLEAR, after following the relay's channel reading."""
        settings = self.state["relays"][str(relay)]
        if settings["enable"] != "ENABLE":
            settings["energised"] = settings["enable"] == "SET"
        else:
            reading = self.reading_torr(relay_channel(relay))
            if isinstance(reading, str):
                reading = {"LO": 0.0, "ATM": 1e9}.get(reading)
            if reading is None:
                settings["energised"] = False
            elif settings["direction"] == "BELOW":
                if reading < settings["setpoint"]:
                    settings["energised"] = True
                elif reading > settings["hysteresis"]:
                    settings["energised"] = False
            elif reading > settings["setpoint"]:
                settings["energised"] = True
            elif reading < settings["hysteresis"]:
                settings["energised"] = False
        return "SET" if settings["energised"] else "CLEAR"
