"""The Keithley 2450's SCPI command summary walked over `sim serve` by a client written from
the manual (2450 Reference Manual, SCPI command reference), not by the project's driver:
common commands, status model, source and sense settings with their ranges, limits, NPLC,
terminals, output, reading buffers, and the error paths with their queue entries. The
second half replays the SCPI a client library sends (PyMeasure's Keithley2450 reset,
apply, measure and shutdown) and checks that it leaves the error queue empty."""

from __future__ import annotations

import re
import socket

import pytest
from conftest import HOST

ERROR = re.compile(r'(-?\d+),"([^;"]*)(?:;(\d);([^"]*))?"')
NUMBER = re.compile(r"[-+]?\d\.\d{6}E[-+]\d{2}")


class Scpi:
    """A raw-socket SCPI client: lines ended by LF, one reply line per query."""

    def __init__(self, port: int):
        self.sock = socket.create_connection((HOST, port), timeout=3)
        self.pending = b""

    def close(self) -> None:
        self.sock.close()

    def write(self, *lines: str) -> None:
        self.sock.sendall("".join(f"{line}\n" for line in lines).encode("ascii"))

    def read(self) -> str:
        while b"\n" not in self.pending:
            chunk = self.sock.recv(4096)
            assert chunk, "the instrument closed the connection"
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode("ascii")

    def ask(self, line: str) -> str:
        self.write(line)
        return self.read()

    def number(self, line: str) -> float:
        reply = self.ask(line)
        assert NUMBER.fullmatch(reply), reply
        return float(reply)

    def next_error(self) -> tuple[int, str]:
        match = ERROR.fullmatch(self.ask(":SYSTem:ERRor:NEXT?"))
        assert match
        return int(match[1]), match[2]

    def errors(self) -> list[int]:
        """Every queued error code, oldest first, emptying the queue."""
        codes = []
        while (code := self.next_error()[0]) != 0:
            codes.append(code)
        return codes

    def refused(self, line: str) -> tuple[int, str]:
        """Send a message that must be refused: nothing comes back for it (not even for a
        query), and the queue's next entry is its error."""
        self.write(line, ":SYST:ERR?")
        match = ERROR.fullmatch(self.read())
        assert match, f"{line!r} was answered"
        return int(match[1]), match[2]


@pytest.fixture
def smu(lab):
    """A fresh connection to an instrument just reset (*RST restores every setting and
    the default buffers; *CLS empties the error queue and the event registers)."""
    client = Scpi(lab.ports["smu"])
    client.write("*RST", "*CLS", "*ESE 0", "*SRE 0", ":STAT:PRES")
    yield client
    client.close()


# --- common commands and the status model ------------------------------------------------


def test_identity_language_and_self_test(lab, smu):
    idn = smu.ask("*IDN?")
    match = re.fullmatch(r"KEITHLEY INSTRUMENTS INC\.,MODEL 2450,(\w+),([\w.]+)", idn)
    assert match
    assert match[1] == lab.lab.potentiostats["smu"].identity.split(",")[2]
    assert smu.ask("*LANG?") == "SCPI"
    smu.write("*LANG SCPI")
    assert smu.ask("*TST?") == "0"
    assert smu.ask("*OPC?") == "1"
    assert smu.ask(":SYSTem:VERSion?") == "1999.0"
    assert smu.errors() == []


def test_status_registers(smu):
    smu.write("*CLS")
    assert smu.ask("*ESR?") == "0"
    smu.write("*OPC")
    assert smu.ask("*ESR?") == "1"  # operation complete, then cleared by the read
    assert smu.ask("*ESR?") == "0"
    smu.write("*ESE 48", "*SRE 32")
    assert smu.ask("*ESE?;*SRE?") == "48;32"
    smu.write(":BOGus")  # command error: CME (32) and an entry in the queue (EAV 4)
    assert smu.ask("*STB?") == str(4 + 32 + 64)  # EAV, ESB and the request summary MSS
    assert smu.ask("*ESR?") == "32"
    smu.write(":SOUR:CURR 5")  # execution error -222: EXE (16)
    assert smu.ask("*ESR?") == "16"
    assert smu.ask(":SYSTem:ERRor:COUNt?") == "2"
    assert smu.ask(":SYST:ERR:ALL?").count(",") == 3  # two entries, two fields each
    assert smu.ask("*STB?") == "0"
    smu.write(":STATus:OPERation:ENABle 4096", ":STAT:QUES:ENAB 16")
    assert smu.ask(":STAT:OPER:ENAB?;:STAT:QUES:ENAB?") == "4096;16"
    assert smu.ask(":STAT:OPER?;:STAT:OPER:COND?;:STAT:QUES:EVEN?") == "0;0;0"
    smu.write(":STATus:PRESet")
    assert smu.ask(":STAT:OPER:ENAB?;:STAT:QUES:ENAB?") == "0;0"
    smu.write("*SRE 0", "*ESE 0")
    assert smu.errors() == []


# --- settings: every settable item reads back, in short or long form ------------------------

SETTINGS = [  # (set, query, answer) from the command descriptions
    (":SOURce:FUNCtion CURRent", ":SOUR:FUNC?", "CURR"),
    (":SOUR:CURR:LEVel 1e-6", ":SOURce1:CURRent?", "1.000000E-06"),
    (":SOUR:CURR:VLIMit 2.5", ":SOUR:CURR:VLIM?", "2.500000E+00"),
    (":SOUR:VOLT:ILIM 1e-3", ":SOUR:VOLT:ILIMit:LEVel?", "1.000000E-03"),
    (":SOUR:VOLT:LEV:IMM:AMPL 0.5", ":SOUR:VOLT?", "5.000000E-01"),
    (":SOUR:CURR:RANGe 1e-5", ":SOUR:CURR:RANG?", "1.000000E-05"),
    (":SOUR:CURR:RANG:AUTO ON", ":SOUR:CURR:RANG:AUTO?", "1"),
    (":SOUR:VOLT:RANG 15", ":SOUR:VOLT:RANG?", "2.000000E+01"),  # the range holding 15 V
    (":SOUR:VOLT:RANG:AUTO 0", ":SOUR:VOLT:RANG:AUTO?", "0"),
    (":SOUR:CURR:DELay 0.25", ":SOUR:CURR:DEL?", "2.500000E-01"),
    (":SOUR:CURR:DEL:AUTO ON", ":SOUR:CURR:DEL:AUTO?", "1"),
    (":SOUR:VOLT:READ:BACK OFF", ":SOUR:VOLT:READ:BACK?", "0"),
    (":SOUR:VOLT:PROTection PROT20", ":SOUR:VOLT:PROT?", "PROT20"),
    (':SENSe:FUNCtion "VOLT"', ":SENS:FUNC?", '"VOLT:DC"'),
    (":SENS:FUNC 'RES'", ":FUNC?", '"RES"'),
    (":SENS:CURR:NPLCycles 0.5", ":SENS:CURR:NPLC?", "5.000000E-01"),
    (":SENS:VOLT:NPLC 10", ":SENSe1:VOLTage:DC:NPLCycles?", "1.000000E+01"),
    (":SENS:RES:NPLC 0.01", ":SENS:RES:NPLC?", "1.000000E-02"),
    (":SENS:CURR:RANGe:AUTO OFF", ":SENS:CURR:RANG:AUTO?", "0"),
    (":SENS:CURR:RANG 1e-3", ":SENS:CURR:RANG:UPPer?", "1.000000E-03"),
    (":SENS:VOLT:RANG 2", ":SENS:VOLT:RANG?", "2.000000E+00"),
    (":SENS:RES:RANG 2e4", ":SENS:RES:RANG?", "2.000000E+04"),
    (":SENS:CURR:AZERo OFF", ":SENS:CURR:AZER?", "0"),
    (":SENS:VOLT:AVERage ON", ":SENS:VOLT:AVER:STATe?", "1"),
    (":SENS:VOLT:AVER:COUNt 25", ":SENS:VOLT:AVER:COUN?", "25"),
    (":SENS:VOLT:AVER:TCONtrol MOVing", ":SENS:VOLT:AVER:TCON?", "MOV"),
    (":SENS:CURR:RSENse ON", ":SENS:CURR:RSEN?", "1"),
    (":SENS:CURR:UNIT OHM", ":SENS:CURR:UNIT?", "OHM"),
    (":SENS:RES:OCOMpensated ON", ":SENS:RES:OCOM?", "1"),
    (":SENS:COUNt 3", ":SENS:COUN?", "3"),
    (":OUTPut:SMODe HIMPedance", ":OUTP:SMOD?", "HIMP"),
    (":OUTP:CURRent:SMODe GUARd", ":OUTP:CURR:SMOD?", "GUAR"),
    (":ROUTe:TERMinals REAR", ":ROUT:TERM?", "REAR"),
    (":FORMat:DATA ASCii", ":FORM?", "ASC"),
    (":TRACe:POINts 500", ':TRAC:POIN? "defbuffer1"', "500"),
    (':TRAC:FILL:MODE ONCE, "defbuffer2"', ':TRAC:FILL:MODE? "defbuffer2"', "ONCE"),
]


@pytest.mark.parametrize("command, query, answer", SETTINGS)
def test_every_setting_reads_back(smu, command, query, answer):
    smu.write(command)
    assert smu.ask(query) == answer
    assert smu.ask(query.lower()) == answer  # case does not matter
    assert smu.errors() == []


def test_minimum_maximum_default_and_reset(smu):
    smu.write(":SENS:CURR:NPLC MAX", ":SOUR:VOLT:ILIM MIN")
    assert smu.ask(":SENS:CURR:NPLC?;:SOUR:VOLT:ILIM?") == "1.000000E+01;1.000000E-09"
    assert smu.ask(":SENS:CURR:NPLC? MIN;:SENS:CURR:NPLC? DEF") == "1.000000E-02;1.000000E+00"
    assert smu.ask(":SOUR:VOLT? MAX;:SOUR:CURR:VLIM? DEFault") == "2.100000E+02;2.100000E+01"
    smu.write("*RST")  # every setting back to its default
    assert smu.ask(
        ":SENS:CURR:NPLC?;:SOUR:VOLT:ILIM?;:SENS:CURR:RANG:AUTO?;:ROUT:TERM?;"
        ":OUTP?;:SOUR:FUNC?;:SENS:COUN?"
    ) == ("1.000000E+00;1.050000E-04;1;FRON;0;VOLT;1")
    assert smu.errors() == []


# --- ranges, limits, terminals and readings, acting on the cell -----------------------------


def test_source_ranges_and_limits(smu):
    smu.write(":SOUR:FUNC CURR", ":SOUR:CURR 2e-3")
    assert smu.number(":SOUR:CURR:RANG?") == 1e-2  # autorange: the 10 mA range holds 2 mA
    smu.write(":SOUR:CURR:RANG 1e-2")  # fixed
    assert smu.refused(":SOUR:CURR 20e-3") == (-222, "Data out of range")  # beyond the range
    assert smu.refused(":SOUR:CURR:RANG 1e-4") == (-222, "Data out of range")  # 2 mA > range
    assert smu.refused(":SOUR:CURR:RANG 2") == (-222, "Data out of range")  # above 1.05 A
    assert smu.refused(":SOUR:CURR:VLIM 0.01") == (-222, "Data out of range")  # below 0.02 V
    assert smu.refused(":SOUR:VOLT 211") == (-222, "Data out of range")
    assert smu.refused(":SENS:VOLT:NPLC 11") == (-222, "Data out of range")
    smu.write(":SOUR:CURR:VLIM -4")  # a limit is a magnitude
    assert smu.number(":SOUR:CURR:VLIM?") == 4.0
    assert smu.errors() == []


def test_readings_units_overflow_and_buffers(smu):
    smu.write(
        ":SOUR:FUNC VOLT",
        ":SOUR:VOLT 1",
        ":SOUR:VOLT:ILIM 1e-3",
        ':SENS:FUNC "VOLT"',
        ":OUTP:SMOD HIMP",
        ":OUTP ON",
    )
    assert smu.ask(":OUTP?") == "1"
    assert smu.number(":READ?") == pytest.approx(1.0)
    assert smu.ask(':READ? "defbuffer1", READ, SOUR, UNIT, SOURUNIT').split(",")[2:] == [
        "Volt DC",
        "Volt DC",
    ]
    smu.write(":SENS:VOLT:RANG 0.2")  # fixed, too small for 1 V: overflow
    assert smu.number(":READ?") == 9.9e37
    smu.write(":SENS:VOLT:RANG:AUTO ON")
    assert smu.number(":MEAS:VOLT?") == pytest.approx(1.0)
    assert smu.number(":SENS:VOLT:RANG?") == 2.0  # the range the reading needs
    amps = smu.number(":MEAS:CURR?")
    assert 0 < amps <= 1e-3  # a blocking cell charging through its limit
    smu.write(":SENS:CURR:UNIT WATT")
    assert smu.number(":READ?") > 0
    assert smu.ask(":TRAC:ACT?") == "6"
    data = smu.ask(':TRAC:DATA? 1, 2, "defbuffer1", READ, REL').split(",")
    assert len(data) == 4 and float(data[0]) == pytest.approx(1.0) and float(data[1]) == 0.0
    assert smu.number(":TRACe:STATistics:MAXimum?") == 9.9e37
    smu.write(
        ':TRACe:MAKE "sweep1", 10', ":SENS:COUN 3", ':TRAC:TRIGger "sweep1"', ':READ? "sweep1"'
    )
    smu.read()
    assert smu.ask(':TRAC:ACT:STAR? "sweep1";:TRAC:ACT:END? "sweep1"') == "1;4"
    smu.write(':TRAC:CLE "sweep1"', ':TRAC:DEL "sweep1"')
    assert smu.refused(':TRAC:ACT? "sweep1"') == (-224, "Illegal parameter value")
    assert smu.refused(":TRAC:DATA? 1, 99") == (-222, "Data out of range")
    smu.write(":OUTP OFF")
    assert smu.errors() == []


def test_protection_clamps_and_rear_terminals_disconnect(lab, smu):
    cell = lab.lab.cell("smu", 1)
    smu.write(
        ":SOUR:FUNC VOLT",
        ":SOUR:VOLT 5",
        ":SOUR:VOLT:ILIM 1e-3",
        ":SOUR:VOLT:PROT PROT2",
        ":OUTP:SMOD HIMP",
        ":OUTP ON",
    )
    assert smu.ask(":SOUR:VOLT:PROT:TRIP?") == "1"
    assert smu.number(":MEAS:VOLT?") == pytest.approx(2.0)  # clamped at 2 V
    smu.write(":SOUR:VOLT:PROT NONE")
    assert smu.ask(":SOUR:VOLT:PROT:TRIP?") == "0"
    smu.write(":ROUT:TERM REAR")  # the output goes off; the cell is on the front terminals
    assert smu.ask(":OUTP?") == "0"
    assert cell.mode == "open"
    smu.write(":OUTP ON")
    assert cell.mode == "open"
    assert smu.ask(':MEAS:CURR? "defbuffer1", READ, SOUR') == "0.000000E+00,5.000000E+00"
    smu.write(":OUTP OFF", ":ROUT:TERM FRON")
    assert smu.errors() == []


# --- error paths ------------------------------------------------------------------------------


def test_errors_from_the_manual(smu):
    assert smu.refused(":BOGus 1") == (-113, "Undefined header")
    assert smu.refused(":SOURce2:CURRent 0") == (-114, "Header suffix out of range")
    assert smu.refused(":SOUR:CURR") == (-109, "Missing parameter")
    assert smu.refused(":OUTP? 1") == (-108, "Parameter not allowed")
    assert smu.refused(":SOUR:CURR one") == (-104, "Data type error")
    assert smu.refused(":SOUR:FUNC POWer") == (-141, "Invalid character data")
    assert smu.refused(":SENS:COUN 1.5") == (-104, "Data type error")
    assert smu.refused(":FORM:DATA REAL") == (-141, "Invalid character data")
    assert smu.refused(':READ? "nobuffer"') == (-224, "Illegal parameter value")
    assert smu.refused(":TRAC:MAKE nobuffer, 10") == (-151, "Invalid string data")
    smu.write(':TRAC:CLE "defbuffer2"')
    assert smu.refused(':FETCh? "defbuffer2"') == (-230, "Data corrupt or stale")
    assert smu.errors() == []


def test_an_unknown_query_is_answered_by_the_error_queue(smu):
    # The 2450 sends nothing for a query it refuses ("nothing to say", manual FAQ on
    # -420) and discards the rest of the message; the -113 entry is its answer.
    code, message = smu.refused(":SENSe:DATE?;*IDN?")
    assert (code, message) == (-113, "Undefined header")
    smu.write(":BOGUS?", "*IDN?")  # a refused query in its own message: the next is answered
    assert smu.read().startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2450,")
    assert smu.next_error()[0] == -113
    assert smu.next_error() == (0, "No error")


# --- what a client library sends (PyMeasure's Keithley2450) ---------------------------------


def test_a_client_librarys_session_leaves_no_error(smu):
    smu.write("*RST;:stat:pres;:*CLS;")  # reset()
    smu.write(":SOUR:FUNC CURR", ":SOUR:CURR:RANG:AUTO 1", ":SOUR:CURR:VLIM 0.1")  # apply_current
    assert smu.errors() == []  # check_errors()
    smu.write(":SENS:FUNC 'VOLT';:SENS:VOLT:NPLC 1.000000;", ":SENS:VOLT:RANG:AUTO 1;")
    smu.write(":SENS:FUNC 'CURR';:SENS:CURR:NPLC 1.000000;", ":SENS:CURR:RANG:AUTO 1;")
    smu.write(":SENS:CURR:RANG:AUTO 0;:SENS:CURR:RANG 1e-05")  # current_range = 1e-5
    assert smu.number(":SENS:CURR:RANG?") == 1e-5
    smu.write(":SOUR:CURR:LEV 1e-06", "OUTPUT ON")
    assert smu.ask("OUTPUT?") == "1"
    assert NUMBER.fullmatch(smu.ask(":READ?"))
    assert smu.ask(":ROUT:TERM?") == "FRON"
    assert smu.ask(":SOUR:FUNC?") == "CURR"  # shutdown(): ramp to 0, stop the buffer, off
    assert smu.number(":SOUR:CURR?") == 1e-6
    smu.write(":SOUR:CURR:LEV 0", ":ABOR", "OUTPUT OFF")
    smu.write(":FORM:DATA ASCII", ":INIT")
    assert int(smu.ask(":TRAC:ACT?")) >= 2
    assert smu.ask("OUTPUT?") == "0"
    assert smu.errors() == []
