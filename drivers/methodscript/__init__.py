"""PalmSens MethodSCRIPT potentiostats (EmStat4, MultiEmStat4 class).

Wire format (MethodSCRIPT manual v1.8, www.palmsens.com/msmanual; PalmSens'
public MethodSCRIPT_Examples; protocols.md §4.1): ASCII lines ended by LF. The
host sends one-letter "online" commands (`t` firmware version, `Z` abort) or a
script: `e`, the script's lines, then an empty line. The instrument echoes `e`,
runs the script and streams its output, then ends it with an empty line.

Output lines: `P<var>;<var>;…` a data package; `M<tttt>`/`*` start and end of a
measurement loop (tttt is the technique number), `L`/`+` of a plain loop,
`C<tttt>`/`-` of one scan of a multi-scan sweep, `T…` text, and `…!XXXX` an
error, with `: Line L, Col C` when a script was refused.

A package variable is a 2-letter type (`ba` WE current, `da` applied potential,
`eb` time, …), 7 hex digits holding the value plus 2^27, and an SI prefix
(`u` = 1e-6, `i` = integer, a space = none); `     nan` is not a number. Metadata
may follow, comma-separated: `1X` status bits, `2XX` current range, `4X` noise.
Numbers in a script are an integer and an SI prefix (`1500m`, `-50n`, `3u`),
or an integer with `i` (`51i`): no decimal point.

A MultiEmStat4 is N EmStat4 channels, each on its own USB-CDC serial port with
its own MethodSCRIPT session (the firmware id `mes4lr`/`mes4hr`; PalmSens'
tools open one port per channel). One driver is the whole instrument: it takes
one Link per channel, and in each script selects the channel's own potentiostat
with `set_pgstat_chan 0`.

Sign convention: a positive WE current charges the cell, as in the Battery Data
Format (the cell's positive electrode is on WE).

The package, one job a module: `codec` (numbers, packages, errors, markers, firmware),
`samples` (package lines → Samples), `scripts` (techniques → script lines), `driver`
(the instrument over its Links). Everything a user needs is importable from here.
"""

from __future__ import annotations

from lipon_hw.drivers.methodscript.codec import (
    CURRENT_RANGES_A,
    CURRENT_TYPES,
    DEVICE_MODELS,
    ERRORS,
    LITERAL_MAX,
    MAX_MANTISSA,
    NAN_FIELD,
    OFFSET,
    POTENTIAL_TYPES,
    SI_PREFIXES,
    STATUS_FLAGS,
    TECHNIQUE_IDS,
    TERMINATOR,
    VAR_TYPES,
    DeviceError,
    Firmware,
    Variable,
    decode_error,
    decode_firmware,
    decode_package,
    decode_value,
    decode_variable,
    encode_error,
    encode_package,
    encode_value,
    encode_variable,
    format_literal,
    is_marker,
    parse_literal,
    script_bytes,
)
from lipon_hw.drivers.methodscript.driver import MethodScriptPotentiostat, Run
from lipon_hw.drivers.methodscript.samples import sample_from_line, sample_from_package
from lipon_hw.drivers.methodscript.scripts import build_script
from lipon_hw.readings import Sample
from lipon_hw.techniques import (
    CCCV,
    EIS,
    OCV,
    ConstantCurrent,
    ConstantVoltage,
    CyclicSweep,
    DCPolarization,
    LinearSweep,
    MultisineEIS,
    Recording,
    Technique,
    log_frequencies,
)

__all__ = [
    "CCCV", "CURRENT_RANGES_A", "CURRENT_TYPES", "DEVICE_MODELS", "EIS", "ERRORS",
    "LITERAL_MAX", "MAX_MANTISSA", "NAN_FIELD", "OCV", "OFFSET", "POTENTIAL_TYPES",
    "SI_PREFIXES", "STATUS_FLAGS", "TECHNIQUE_IDS", "TERMINATOR", "VAR_TYPES",
    "ConstantCurrent", "ConstantVoltage", "CyclicSweep", "DCPolarization", "DeviceError",
    "Firmware", "LinearSweep", "MethodScriptPotentiostat", "MultisineEIS", "Recording", "Run",
    "Sample", "Technique", "Variable", "build_script", "decode_error", "decode_firmware",
    "decode_package", "decode_value", "decode_variable", "encode_error", "encode_package",
    "encode_value", "encode_variable", "format_literal", "is_marker", "log_frequencies",
    "parse_literal", "sample_from_line", "sample_from_package", "script_bytes",
]
