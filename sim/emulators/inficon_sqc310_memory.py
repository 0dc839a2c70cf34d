"""SQC-310 emulator: the controller's parameter memory and the commands that read and write it.

Films (``A1``-``A5``), materials (``F``), layers (``D``), the system (``B``), sensors (``HA``)
and sources (``HB``) are tables of integers scaled by their displayed decimals (field numbers
and scales: `lipon_hw.drivers.inficon_sqc310`, which cites the manual, PN 074-550-P1B §5.3).
A get (``A2 1? 1 2 3``) answers ``number,value`` pairs each followed by a space; a set
(``A2 1 1,50 2,5``) writes them; ``F`` reads and sets one field at a time and a get answers
the bare value; a name field takes the rest of the command. Values the physics could not
work with (a density of 0, a film that does not exist) are refused with status 'D' (the
limits are assumptions). Power-up values are assumptions too (PID: the manual's example).
The memory is instrument state: it survives new connections and is part of the snapshot.
"""

from __future__ import annotations

import re

from lipon_hw.drivers.inficon_sqc310 import (
    CAPTURE,
    CHANNELS,
    CRYSTAL_TOOLING,
    FILM_FIELDS,
    FILM_MATERIAL,
    FILM_TOOLING,
    FILMS,
    LAYER_FIELDS,
    LAYER_FILM,
    LAYER_MAX_POWER,
    LAYER_RATE,
    LAYERS,
    MATERIAL_DENSITY,
    MATERIAL_NAME,
    MATERIAL_Z,
    MATERIALS,
    SENSOR_FIELDS,
    SOURCE_SHUTTER_RELAY,
    SYSTEM_FIELDS,
    Param,
)
from lipon_hw.sim.emulators.inficon_sensor import FilmConstants

OUTPUT = 1  # the output wired to the evaporator supply
#: B fields: 1 period, 2 system tooling, 3/4/12/13 crystal tooling 1-4 (%), 5 simulate,
#: 6/7 min/max frequency (kHz, assumption), 8-11 scale 1-4
SYSTEM_DEFAULTS = {1: 25, 2: 100, 3: 100, 4: 100, 5: 0, 6: 5000, 7: 6000, 8: 100, 9: 100,
                   10: 100, 11: 100, 12: 100, 13: 100}
CRYSTAL_TOOLING_FIELDS = {1: 3, 2: 4, 3: 12, 4: 13}  # sensor -> B field
GET_INDEXED = re.compile(r"(\d+)\?((?: \d+)+) ?")
SET_INDEXED = re.compile(r"(\d+) (.+)")
NAME_FIELDS = {("A1", 1), ("F", MATERIAL_NAME)}


class ParameterMemory:
    """The parameter tables of one SQC-310, and their get/set commands."""

    def __init__(self, shutter_relay: int):
        self.films: dict[int, dict[str, dict[int, int | str]]] = {}
        self.materials: dict[int, dict[int, int | str]] = {}
        self.layers: dict[int, dict[int, int]] = {}
        self.system = dict(SYSTEM_DEFAULTS)
        self.sensors: dict[int, dict[int, int]] = {s: {} for s in range(1, CHANNELS + 1)}
        self.sources = {o: dict.fromkeys(SENSOR_FIELDS, 0) for o in range(1, CHANNELS + 1)}
        self.sources[OUTPUT][SOURCE_SHUTTER_RELAY.number] = shutter_relay

    def snapshot(self) -> dict:
        return {"films": self.films, "materials": self.materials, "layers": self.layers,
                "system": self.system, "sensors": self.sensors, "sources": self.sources}

    def restore(self, state: dict) -> None:
        """Accepts a snapshot as it comes back from JSON (string keys)."""
        self.films = {int(f): {g: int_keys(v) for g, v in groups.items()}
                      for f, groups in state["films"].items()}
        self.materials = {int(m): int_keys(v) for m, v in state["materials"].items()}
        self.layers = {int(n): int_keys(v) for n, v in state["layers"].items()}
        self.system = int_keys(state["system"])
        self.sensors = {int(s): int_keys(v) for s, v in state["sensors"].items()}
        self.sources = {int(o): int_keys(v) for o, v in state["sources"].items()}

    # --- tables, created with their power-up values when first used ---------------------
    def film(self, number: int) -> dict[str, dict[int, int | str]]:
        if number not in self.films:
            self.films[number] = default_film(number)
        return self.films[number]

    def material(self, number: int) -> dict[int, int | str]:
        if number not in self.materials:
            self.materials[number] = {MATERIAL_NAME: f"MATERIAL{number}",
                                      MATERIAL_DENSITY.number: 100, MATERIAL_Z.number: 1000}
        return self.materials[number]

    def layer(self, number: int) -> dict[int, int]:
        if number not in self.layers:
            self.layers[number] = default_layer()
        return self.layers[number]

    def value(self, param: Param, index: int) -> float:
        """A numeric parameter of a film (A*) or layer (D), in display units."""
        table = self.layer(index) if param.command == "D" else self.film(index)[param.command]
        return param.from_wire(table[param.number])

    def constants(self, film: int, sensor: int) -> FilmConstants:
        """Density and Z of the film's material, and film × crystal tooling of `sensor`."""
        material = self.material(int(self.film(film)["A2"][FILM_MATERIAL.number]))
        film_tooling = self.film(film)["A2"][FILM_TOOLING.number]
        tooling = film_tooling / 100 * self.system[CRYSTAL_TOOLING_FIELDS[sensor]] / 100
        return FilmConstants(MATERIAL_DENSITY.from_wire(material[MATERIAL_DENSITY.number]),
                             MATERIAL_Z.from_wire(material[MATERIAL_Z.number]), tooling)

    def frequency_limits_Hz(self) -> tuple[float, float]:
        """B 6 and 7: the frequencies of a dead and of a fresh crystal (crystal life)."""
        return self.system[6] * 1e3, self.system[7] * 1e3

    def shutter_relay(self, output: int) -> int:
        """The relay of an output's source shutter (HB 3; 0 = none)."""
        return self.sources[output].get(SOURCE_SHUTTER_RELAY.number, 0)

    def source_relays(self) -> set[int]:
        return {s.get(SOURCE_SHUTTER_RELAY.number) for s in self.sources.values()}

    # --- commands ---------------------------------------------------------------------------
    def cmd_film(self, arg: str) -> str:
        group = "A" + arg[:1]
        if group not in FILM_FIELDS or arg[1:2] != " ":
            raise ValueError(f"{arg!r} is not a film command")
        return self._fields(group, arg[2:], FILMS, lambda f: self.film(f)[group],
                            FILM_FIELDS[group])

    def cmd_layer(self, arg: str) -> str:
        return self._fields("D", arg, LAYERS, self.layer, LAYER_FIELDS)

    def cmd_sensor(self, arg: str) -> str:
        return self._fields("HA", arg, CHANNELS, self._sensor_table, SENSOR_FIELDS)

    def cmd_source(self, arg: str) -> str:
        return self._fields("HB", arg, CHANNELS, lambda o: self.sources[o], SENSOR_FIELDS)

    def cmd_system(self, arg: str) -> str:
        return self._fields("B", "0" + arg, 0, lambda _: self.system, SYSTEM_FIELDS)

    def cmd_material(self, arg: str) -> str:
        """One field at a time; a get answers the bare value."""
        match = GET_INDEXED.fullmatch(arg)
        if match:
            number = parse_index(match.group(1), MATERIALS)
            (field,) = parse_fields(match.group(2), range(1, 4))
            return str(self.material(number)[field])
        number, values = self._parse_set("F", arg, MATERIALS, range(1, 4))
        if len(values) != 1:
            raise ValueError("F sets one field at a time")
        self.material(number).update(values)
        return ""

    def _sensor_table(self, sensor: int) -> _SensorTable:
        return _SensorTable(self.sensors[sensor], self.system, CRYSTAL_TOOLING_FIELDS[sensor])

    def _fields(self, command: str, arg: str, count: int, table, fields: range) -> str:
        """Get (`{n}? 1 2`) or set (`{n} 1,50 2,5`) fields of the table numbered n."""
        match = GET_INDEXED.fullmatch(arg)
        if match:
            values = table(parse_index(match.group(1), count))
            return "".join(f"{f},{values[f]} " for f in parse_fields(match.group(2), fields))
        number, values = self._parse_set(command, arg, count, fields)
        target = table(number)
        for field, value in values.items():
            target[field] = value
        return ""

    def _parse_set(self, command: str, arg: str, count: int,
                   fields: range) -> tuple[int, dict[int, int | str]]:
        match = SET_INDEXED.fullmatch(arg)
        if not match:
            raise ValueError(f"{arg!r} is not a parameter setting")
        number = parse_index(match.group(1), count)
        if (command, 1) in NAME_FIELDS and match.group(2).startswith("1,"):
            return number, {1: _name(match.group(2)[2:])}
        values = {}
        for item in match.group(2).split():
            field, _, value = item.partition(",")
            if not field.isdigit() or int(field) not in fields:
                raise ValueError(f"{item!r} is not a field of {command}")
            values[int(field)] = _count(value)
        for field, value in values.items():
            _check_field(command, field, value)
        return number, values


def default_film(number: int) -> dict[str, dict[int, int | str]]:
    """A film slot as the emulator powers up (values are assumptions; PID: manual example)."""
    film = {group: {n: 0 for n in fields} for group, fields in FILM_FIELDS.items()}
    film["A1"] = {1: f"FILM{number}"}
    film["A2"].update({1: 50, 2: 5, 4: number, 5: 1, 6: 100})
    film["A4"][CAPTURE.number] = 50
    return film


def default_layer() -> dict[int, int]:
    layer = {n: 0 for n in LAYER_FIELDS}
    layer.update({LAYER_FILM.number: 1, LAYER_MAX_POWER.number: 1000})
    return layer


class _SensorTable:
    """HA fields of one sensor; field 1 (crystal tooling) is the B field of that sensor."""

    def __init__(self, fields: dict[int, int], system: dict[int, int], tooling_field: int):
        self._fields, self._system, self._tooling_field = fields, system, tooling_field

    def __getitem__(self, field: int) -> int:
        if field == CRYSTAL_TOOLING.number:
            return self._system[self._tooling_field]
        return self._fields.get(field, 0)

    def __setitem__(self, field: int, value: int) -> None:
        if field == CRYSTAL_TOOLING.number:
            self._system[self._tooling_field] = value
        else:
            self._fields[field] = value


def parse_index(text: str, count: int) -> int:
    """A film/layer/sensor number in 1..count (0 stands for "none" where count is 0)."""
    if not text.isdigit() or not (int(text) == 0 if count == 0 else 1 <= int(text) <= count):
        raise ValueError(f"{text!r} is out of range")
    return int(text)


def parse_fields(text: str, fields: range) -> list[int]:
    numbers = [int(n) for n in text.split()]
    if not numbers or any(n not in fields for n in numbers):
        raise ValueError(f"{text!r} names a field that does not exist")
    return numbers


def _count(text: str) -> int:
    """Numeric fields travel as integers (the displayed value times 10^decimals)."""
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


def _name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 16 or not name.isprintable():
        raise ValueError(f"{text!r} is not a name")
    return name


#: (command, field) -> allowed raw values, where the physics needs a limit
FIELD_LIMITS = {("F", MATERIAL_DENSITY.number): range(1, 10000),
                ("F", MATERIAL_Z.number): range(1, 10000),
                ("A2", FILM_MATERIAL.number): range(1, MATERIALS + 1),
                ("A2", FILM_TOOLING.number): range(1, 1000),
                ("D", LAYER_FILM.number): range(1, FILMS + 1),
                ("D", LAYER_RATE.number): range(1, 100000),
                ("D", LAYER_MAX_POWER.number): range(0, 1001)}


def _check_field(command: str, field: int, value: int) -> None:
    allowed = FIELD_LIMITS.get((command, field))
    if allowed is not None and value not in allowed:
        raise ValueError(f"{command} field {field} cannot be {value}")


def int_keys(table: dict) -> dict:
    return {int(k): v for k, v in table.items()}
