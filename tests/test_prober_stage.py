"""The prober's stage (GRBL 1.1 driver ↔ emulator over the real line framing) and the chuck
that puts the sheet's cells, or open circuits, on the probe card's potentiostat channels."""

from __future__ import annotations

import math

import pytest
from conftest import ManualClock

from lipon_hw.drivers.grbl import format_status, parse_status, trapezoid_s
from lipon_hw.errors import InputError, InstrumentError, LinkLost, NeedsPerson
from lipon_hw.links import Health
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.chuck import ProbeContact
from lipon_hw.sim.emulators.grbl import GrblEmulator
from lipon_hw.station import load_station
from lipon_hw.techniques import EIS, OCV

XY_RATE, XY_ACCEL = 6000 / 60.0, 500.0  # the emulator's X/Y defaults, mm/s and mm/s²


class Sheet:
    """A sheet as the chuck reads one (rows, cols, pitch_mm, cell(row, col), 1-based),
    with real anodeless cells named by their position."""

    def __init__(self, rows: int, cols: int, pitch_mm=(5.0, 5.0)):
        self.rows, self.cols, self.pitch_mm = rows, cols, pitch_mm
        self.cells = {(r, c): cell_from_spec({"kind": "lco_anodeless", "name": f"R{r}C{c}"})
                      for r in range(1, rows + 1) for c in range(1, cols + 1)}

    def cell(self, row: int, col: int):
        return self.cells[(row, col)]


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def lab(clock):
    """The default station in process; the driver waits on the test's clock."""
    lab = load_station(None).connect(clock)
    stage = lab.instruments["stage"]
    stage.clock, stage.sleep = clock, clock.advance
    return lab


@pytest.fixture
def stage(lab):
    return lab.instruments["stage"]


def go(stage, x_mm: float, y_mm: float) -> None:
    """A move, waited for as a wall-clock host waits (here on the test's clock)."""
    stage.wait_until_stopped(stage.move_to_mm(x_mm, y_mm))


def touch(stage, down: bool) -> None:
    stage.wait_until_stopped(stage.contact(down))


def channel_contents(lab):
    return {c: lab.sim.cell("probe_pstat", c) for c in lab.instruments["stage"].card.channels}


# --- codec: the interface document's examples ------------------------------------------


def test_status_reports_of_the_interface_document():
    status = parse_status("<Idle|MPos:0.000,-10.000,5.000|FS:0,0>")
    assert (status.state, status.mpos, status.fields) == ("Idle", (0.0, -10.0, 5.0),
                                                          {"FS": "0,0"})
    hold = parse_status("<Hold:1|MPos:1.000,2.000,3.000|Bf:15,128|FS:500,8000|WCO:0,1.551,5.664>")
    assert (hold.state, hold.substate, hold.fields["Bf"]) == ("Hold", 1, "15,128")
    assert format_status("Idle", (0, -10, 5), 0) == b"<Idle|MPos:0.000,-10.000,5.000|FS:0,0>\r\n"
    for bad in ("<Idle|WPos:-2.500,0.000,11.000>", "<Walk|MPos:0,0,0>", "ok"):
        with pytest.raises(ValueError):
            parse_status(bad)


def test_emulator_bytes_as_the_documents_show_them(world):
    emu = GrblEmulator("stage", world.sputter)
    assert emu.handle(b"\n") == b"ok\r\n"  # an empty line is valid
    assert emu.handle(b"?") == b"<Idle|MPos:-1.000,-1.000,-1.000|FS:0,0>\r\n"  # no ok
    assert emu.handle(b"$I\n") == b"[VER:1.1h.20190830:]\r\n[OPT:V,15,128]\r\nok\r\n"
    assert emu.handle(b"$\n").startswith(b"[HLP:$$ $# $G $I $N $x=val")
    assert emu.handle(b"\x18") == b"\r\nGrbl 1.1h ['$' for help]\r\n"
    settings = emu.handle(b"$$\n").decode().split("\r\n")
    assert settings[0] == "$0=10" and "$110=6000.000" in settings and settings[-2:] == ["ok", ""]
    assert emu.handle(b"G4\n") == b"error:28\r\n"
    assert emu.handle(b"G1 X-1\n") == b"error:22\r\n"  # no feed yet
    assert emu.handle(b"$J=G91 X-500 F100\n") == b"error:15\r\n"  # jog beyond travel
    assert emu.handle(b"$9999=1\n") == b"error:3\r\n"
    assert emu.handle(b"G53 G2 X-2\n") == b"error:20\r\n"
    assert emu.handle(b"$X\n") == b"ok\r\n"


def test_soft_limit_alarm_waits_for_reset_then_unlock(world):
    emu = GrblEmulator("stage", world.sputter)
    assert emu.handle(b"G53 G0 X10\n") == b"ALARM:2\r\n[MSG:Reset to continue]\r\n"
    assert emu.handle(b"?") == b"" and emu.handle(b"G0 X-2\n") == b""  # nothing answered
    assert emu.handle(b"\x18") == b"\r\nGrbl 1.1h ['$' for help]\r\n[MSG:'$H'|'$X' to unlock]\r\n"
    assert emu.handle(b"G0 X-2\n") == b"error:9\r\n"
    assert emu.handle(b"?").startswith(b"<Alarm|MPos:-1.000,-1.000,-1.000")  # retained
    assert emu.handle(b"$X\n") == b"[MSG:Caution: Unlocked]\r\nok\r\n"
    assert emu.handle(b"?").startswith(b"<Idle|")


def test_dwell_holds_its_ok_and_the_lines_after_it(clock, world):
    emu = GrblEmulator("stage", world.sputter)
    assert emu.handle(b"G53 G0 X-11\nG4 P0.5\nG53 G0 X-1\n") == b"ok\r\n"
    t = trapezoid_s(10, XY_RATE, XY_ACCEL)
    clock.advance(t + 0.49)
    assert emu.handle(b"?").startswith(b"<Idle|MPos:-11.000,")  # moves done, dwelling
    clock.advance(0.02)
    assert emu.handle(b"?") == b"ok\r\nok\r\n<Run|MPos:-11.000,-1.000,-1.000|FS:0,0>\r\n"


def test_feed_hold_decelerates_and_resume_finishes_the_move(clock, world):
    emu = GrblEmulator("stage", world.sputter)
    emu.handle(b"G53 G0 X-201\n")
    clock.advance(1.0)  # cruising at 100 mm/s
    emu.handle(b"!")
    assert emu.handle(b"?").startswith(b"<Hold:1|")
    clock.advance(0.25)  # 100 mm/s at 500 mm/s² stops in 0.2 s and 10 mm
    stopped = parse_status(emu.handle(b"?").decode().strip())
    assert (stopped.state, stopped.substate) == ("Hold", 0)
    assert stopped.mpos[0] == pytest.approx(-1 - (100 * 1.0 - 100 * 0.2 / 2) - 10, abs=1e-3)
    emu.handle(b"~")
    clock.advance(5)
    assert emu.handle(b"?").startswith(b"<Idle|MPos:-201.000,")


# --- driver ↔ emulator --------------------------------------------------------------------


@pytest.mark.parametrize("dx_mm", [5.0, 50.0])
def test_move_time_follows_distance_rate_and_acceleration(lab, stage, clock, dx_mm):
    go(stage, 0, 0)
    touch(stage, True)
    start = clock()
    expected = stage.move_to_mm(dx_mm, 0)
    rates = lab.sim.emulators["stage"].settings  # the station's stage, `$110`/`$120`…
    xy_rate, xy_accel = rates[110] / 60, rates[120]
    lift = trapezoid_s(stage.clear_z_mm - stage.contact_z_mm, stage.feed_mm_min / 60,
                       rates[122])  # Z up at the approach feed and the Z acceleration
    step = 2 * math.sqrt(dx_mm / xy_accel) if dx_mm < xy_rate ** 2 / xy_accel else \
        dx_mm / xy_rate + xy_rate / xy_accel
    assert expected == pytest.approx(lift + step, rel=1e-6)
    clock.advance(lift + step * 0.98)
    assert stage.moving()
    clock.advance(step * 0.04)
    assert not stage.moving()
    assert stage.position_mm() == (dx_mm, 0.0, stage.clear_z_mm)
    assert clock() - start == pytest.approx(expected, rel=0.05)


def test_status_during_a_move_reports_run_and_the_path(stage, clock):
    duration = stage.move_to_mm(0, 100)
    clock.advance(duration / 2)
    status = stage.status()
    assert status.state == "Run"
    assert float(status.fields["FS"].split(",")[0]) > 0
    x, y, _ = status.mpos
    assert -390 < x < -1 and -290 < y < -1  # on the way from home
    clock.advance(duration)
    assert not stage.moving() and stage.status().state == "Idle"


def test_a_target_beyond_travel_is_one_sentence_naming_the_stage(stage):
    go(stage, 10, 10)
    with pytest.raises(InstrumentError) as err:
        go(stage, 1000, 0)
    message = str(err.value)
    assert message.startswith("stage refused the move") and "ALARM:2" in message
    assert "\n" not in message and "soft limit" in message
    assert stage.status().state == "Idle"  # reset and unlocked, position kept
    assert stage.position_mm()[:2] == (10.0, 10.0)
    go(stage, 20, 10)  # and it moves on


def test_a_dropped_link_is_ridden_out_and_a_dead_one_is_lost(lab, stage):
    emulator = lab.sim.emulators["stage"]
    emulator.faults.drop_replies = 1
    assert stage.status().state == "Idle"
    assert stage.link.health is Health.OK
    emulator.faults.link_down = True
    with pytest.raises(LinkLost):
        stage.position_mm()
    emulator.faults.link_down = False
    stage.link.reopen_now()
    assert stage.status().state == "Idle"


def test_a_stage_back_from_a_lost_link_must_stand_where_it_was_left(lab, stage, clock):
    """After an outage the driver asks the controller where it is: at the target it was
    sent, or where it last reported (the move lost with the link), it goes on; a
    controller reset meanwhile (a USB reconnect resets an Arduino-based board: Alarm, or
    Idle somewhere else) is refused in one sentence that says to home it."""
    go(stage, 10, 5)
    emulator = lab.sim.emulators["stage"]
    emulator.faults.link_down = True
    with pytest.raises(LinkLost):
        stage.position_mm()
    emulator.faults.link_down = False
    stage.link.reopen_now()
    stage.still_where_left()  # nothing happened to the controller
    assert stage.position_mm()[:2] == (10.0, 5.0)
    state = emulator.snapshot()
    for reset in ({**state, "alarm": True}, {**state, "position": [0.0, 0.0, 0.0]}):
        emulator.restore(reset)
        with pytest.raises(InstrumentError, match=r"^stage reports (Alarm|Idle) at machine "
                           r".*, not where it was left \(.*\): its controller was reset, and "
                           r"its position is not known; home it, then resume the run$"):
            stage.still_where_left()
        emulator.restore(state)
        stage._position_lost = None  # the next reset is judged afresh (a person homed it)


def _reset_while_lost(lab, stage):
    """The needles down on a cell, then the stage's link lost and its port opened again
    on a board that resets when its port is opened (`resets_on_reconnect`)."""
    emulator = lab.sim.emulators["stage"]
    emulator.resets_on_reconnect = True
    go(stage, 10, 5)
    touch(stage, True)
    assert emulator.in_contact
    emulator.faults.link_down = True
    with pytest.raises(LinkLost):
        stage.position_mm()
    emulator.faults.link_down = False
    stage.link.reopen_now()
    return emulator


def test_a_board_reset_by_its_port_reopening_powers_up_where_it_stands(lab, stage, clock):
    """GRBL's power-up as the documents give it: the banner, Alarm with homing on
    (`[MSG:'$H'|'$X' to unlock]`), machine position counted from where the stage stands
    (0, 0, 0); G-code locked (error:9); `$H` finds the switches: Z up first, the needles
    off the cell, and the true position (−pull-off on every axis) again."""
    emulator = lab.sim.emulators["stage"]
    emulator.resets_on_reconnect = True
    go(stage, 10, 5)
    touch(stage, True)
    where = emulator.planner.position
    emulator.reset_connection()  # the first open was the session's: this one resets
    out = emulator.handle(b"?")
    assert out == (b"\r\nGrbl 1.1h ['$' for help]\r\n[MSG:'$H'|'$X' to unlock]\r\n"
                   b"<Alarm|MPos:0.000,0.000,0.000|FS:0,0>\r\n"), out
    assert emulator.planner.position == where and emulator.in_contact  # nothing moved
    assert emulator.handle(b"G53 G0 Z-2\n") == b"error:9\r\n"
    assert emulator.handle(b"$H\n") == b""  # its ok comes when homing ends
    clock.advance(120)
    assert emulator.handle(b"?") == b"ok\r\n<Idle|MPos:-1.000,-1.000,-1.000|FS:0,0>\r\n"
    assert emulator.planner.position == (-1.0, -1.0, -1.0) and not emulator.in_contact


def test_a_stage_reset_while_its_link_was_lost_is_not_trusted_to_lift_its_needles(
        lab, stage):
    """After the reset the controller says it stands at (0, 0, 0), above clear height:
    unlocked and lifted to clear height as its coordinates say, the needles would stay
    on the cell and the safe state say they were up. The driver refuses to go on and its
    safe state fails at once in words that say the needles may be down (NeedsPerson: no
    retry helps); the stage is neither unlocked nor moved."""
    emulator = _reset_while_lost(lab, stage)
    with pytest.raises(InstrumentError, match=r"^stage reports Alarm at machine \(0\.000, "
                       r"0\.000, 0\.000\) mm, not where it was left .*; home it, then "
                       r"resume the run$"):
        stage.still_where_left()
    with pytest.raises(NeedsPerson, match=r"its position is not known, so the needles may "
                       r"still be down: home it \(\$H\) before anything moves under them$"):
        stage.make_safe()
    assert emulator.alarm and emulator.in_contact and not emulator.planner.busy
    # a driver that never moved it (a resumed run's, the guard's after the engine died)
    # finds it in Alarm: its position is not known to it either
    fresh = type(stage)("stage", stage.link)
    with pytest.raises(NeedsPerson, match=r"^stage reports Alarm at machine \(0\.000, "
                       r"0\.000, 0\.000\) mm, in a state GRBL enters after a reset or a "
                       r"limit: its controller was reset, .* so the needles may still be "
                       r"down"):
        fresh.make_safe()
    assert emulator.alarm and emulator.in_contact and not emulator.planner.busy


def test_make_safe_lifts_the_needles_even_mid_move(lab, stage, clock):
    go(stage, 0, 0)
    touch(stage, True)
    stage.make_safe()
    clock.advance(5)
    assert stage.position_mm()[2] == stage.clear_z_mm
    clock.advance(stage.contact(True) / 3)  # on the way down
    stage.make_safe()  # reset in motion: ALARM:3, unlocked, Z sent up
    clock.advance(5)
    status = stage.status()
    assert status.state == "Idle" and status.mpos[2] == stage.clear_z_mm


def test_the_station_refuses_a_bad_card(tmp_path):
    text = (load_station(None).text
            .replace("card: {rows: 4, cols: 8,", "card: {rows: 0, cols: 8,"))
    path = tmp_path / "station.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=r"station.yaml:\d+.*card needs rows, cols"):
        load_station(path)


@pytest.mark.parametrize("key", ["homed", "resets_on_reconnect"])
def test_the_simulated_stages_yes_or_no_options_take_only_true_or_false(tmp_path, key,
                                                                      world):
    """`maybe` (or any other non-boolean) was taken as true; it is the file's line and
    field, before anything runs."""
    at = "      potentiostat: probe_pstat\n"
    text = load_station(None).text.replace(at, f"{at}      {key}: maybe\n")
    path = tmp_path / "station.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=rf"station.yaml:\d+: instruments\.stage\.sim\.{key}: "
                       r"must be true or false, not 'maybe'$"):
        load_station(path)
    with pytest.raises(ValueError, match=rf"^stage: {key} must be true or false, not 'maybe'$"):
        GrblEmulator("stage", world.sputter, **{key: "maybe"})  # built without a station


def test_a_stage_card_beyond_the_potentiostat_is_refused(tmp_path):
    text = load_station(None).text.replace('"sim://probe/{1-32}"', '"sim://probe/{1-16}"')
    path = tmp_path / "station.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="sites use channel 17, but probe_pstat has 16"):
        load_station(path)


# --- the chuck ------------------------------------------------------------------------------


def test_touchdown_puts_each_sites_cell_on_its_channel(lab, stage):
    sheet = Sheet(6, 8)
    lab.sim.chuck.load(sheet)
    lab.sim.chuck.contact_miss = 0.0
    go(stage, 2 * 5.0, 1 * 5.0)  # cell (2, 3) under site (1, 1)
    touch(stage, True)
    card = stage.card
    held = channel_contents(lab)
    for i in range(1, card.rows + 1):
        for j in range(1, card.cols + 1):
            contact = held[card.channel(i, j)]
            row, col = i + 1, j + 2
            if col <= sheet.cols:
                assert contact.cell is sheet.cell(row, col), (i, j)
            else:  # sites (i, 7) and (i, 8) of the card hang past the sheet's edge
                assert not contact.connected, (i, j)
    off = {(s.site, s.contact) for s in lab.sim.chuck.last if s.contact != "ok"}
    assert off == {((i - 1) * card.cols + j, "off_sheet") for i in range(1, card.rows + 1)
                   for j in (7, 8)}
    touch(stage, False)
    assert not any(c.connected for c in channel_contents(lab).values())


def test_a_misaligned_touchdown_lands_on_no_pad(lab, stage):
    lab.sim.chuck.load(Sheet(4, 8))
    go(stage, 0.5, 0)  # half a millimetre off the pads' centres
    touch(stage, True)
    assert {s.contact for s in lab.sim.chuck.last} == {"misaligned"}
    assert not any(c.connected for c in channel_contents(lab).values())


def test_contact_misses_are_seeded_and_read_as_no_contact(lab, stage, clock):
    sheet = Sheet(4, 8)
    chuck = lab.sim.chuck
    chuck.load(sheet)
    chuck.contact_miss = 0.2
    go(stage, 0, 0)
    touch(stage, True)
    missed = [s for s in chuck.last if s.contact == "miss"]
    assert 1 <= len(missed) <= 16  # 32 sites at 20 %
    again = load_station(None).connect(ManualClock()).sim.chuck  # same seed, same misses
    again.load(Sheet(4, 8))
    again.contact_miss = 0.2
    again.touch(*chuck.origin_mm, True)
    assert [s.contact for s in again.last] == [s.contact for s in chuck.last]

    pstat = lab.instruments["probe_pstat"]
    good = next(s for s in chuck.last if s.contact == "ok")
    for site in (missed[0], good):
        run = pstat.start(site.channel, OCV(2, 1.0))
        clock.advance(3)
        ocv = [s.E_V for s in run.poll()]
        contact = lab.sim.cell("probe_pstat", site.channel)
        at_open = contact.voltage_V(clock())
        run = pstat.start(site.channel, EIS(1e4, 1e3, 2))  # at the open-circuit potential
        clock.advance(60)
        z = [abs(complex(s.z_re_ohm, s.z_im_ohm)) for s in run.poll()]
        if site is good:
            assert contact.cell is sheet.cell(site.row, site.col)
            assert ocv[-1] == pytest.approx(at_open, abs=1e-5)
            assert max(z) < 1e4
        else:
            assert ocv[-1] == pytest.approx(contact.floating_V, abs=1e-5)  # floating input
            assert min(z) > 1e6  # |Z| enormous: no contact, neither a short nor a cell


def test_the_channels_start_open_and_an_empty_chuck_touches_nothing(lab, stage):
    assert all(isinstance(c, ProbeContact) and not c.connected
               for c in channel_contents(lab).values())
    go(stage, 0, 0)
    touch(stage, True)
    assert {s.contact for s in lab.sim.chuck.last} == {"off_sheet"}


def test_a_checkpoint_restores_the_stage_and_the_miss_draws(lab, stage, clock):
    chuck = lab.sim.chuck
    chuck.load(Sheet(4, 8))
    chuck.contact_miss = 0.3
    go(stage, 0, 0)
    saved = lab.sim.snapshot()
    touch(stage, True)
    first = [s.contact for s in chuck.last]
    touch(stage, False)
    go(stage, 10, 5)
    lab.sim.restore(saved)
    assert stage.position_mm()[:2] == (0.0, 0.0)
    assert not any(c.connected for c in channel_contents(lab).values())
    touch(stage, True)
    assert [s.contact for s in chuck.last] == first


def test_a_128_site_bench_is_the_default_station_with_a_bigger_bank(tmp_path, clock):
    text = (load_station(None).text.replace('"sim://probe/{1-32}"', '"sim://probe/{1-128}"')
            .replace("card: {rows: 4, cols: 8,", "card: {rows: 8, cols: 16,"))
    path = tmp_path / "bench.yaml"
    path.write_text(text, encoding="utf-8")
    lab = load_station(path).connect(clock)
    stage = lab.instruments["stage"]
    stage.clock, stage.sleep = clock, clock.advance
    lab.sim.chuck.load(Sheet(20, 30))
    lab.sim.chuck.contact_miss = 0.0
    go(stage, 0, 0)
    touch(stage, True)
    assert [s.contact for s in lab.sim.chuck.last] == ["ok"] * 128
    assert lab.sim.cell("probe_pstat", 128).cell is lab.sim.chuck.sheet.cell(8, 16)


def test_the_needles_land_on_time_while_only_the_potentiostat_is_asked(lab, stage, clock):
    sheet = Sheet(4, 8)
    lab.sim.chuck.load(sheet)
    lab.sim.chuck.contact_miss = 0.0
    go(stage, 0, 0)
    travel = stage.contact(True)
    clock.advance(travel * 0.9)
    pstat = lab.instruments["probe_pstat"]
    pstat.cell_off(1)  # the stage is not asked: its landing is on the lab's schedule
    assert lab.sim.chuck.touchdowns == 0
    clock.advance(travel * 0.2)
    run = pstat.start(1, OCV(1, 0.5))
    assert lab.sim.chuck.touchdowns == 1
    assert lab.sim.cell("probe_pstat", 1).cell is sheet.cell(1, 1)
    clock.advance(2)
    assert run.poll() and run.end_reason == "done"


def test_a_small_screening_steps_the_stage_over_every_cell_once(tmp_path):
    """The screening engine on the default station: the stage's moves and touchdowns on
    the run clock, each cell of a 4 × 10 sheet measured once by a 2 × 4 block of sites."""
    import sqlite3
    from pathlib import Path

    from lipon_hw import api

    shipped = Path(__file__).parent.parent / "sequences" / "sheet_screening.yaml"
    text = (shipped.read_text(encoding="utf-8").replace("  roll: ROLL-0001\n", "")
            .replace("  rows: 20\n  cols: 30\n", "  rows: 4\n  cols: 10\n")
            .replace("sites: [4, 8]", "sites: [2, 4]"))
    recipe = tmp_path / "small.yaml"
    recipe.write_text(text, encoding="utf-8")
    run = api.run(recipe, tmp_path / "data")
    assert run.status == "completed", run.message
    with sqlite3.connect(tmp_path / "data" / "lipon.db") as db:
        cells = db.execute("SELECT row, col, touchdown, contact FROM screen_cells").fetchall()
    assert sorted((r, c) for r, c, _, _ in cells) == [(r, c) for r in range(1, 5)
                                                      for c in range(1, 11)]
    assert {t for _, _, t, _ in cells} == set(range(1, 7))  # 2 × 3 touchdowns
    assert sum(contact == "ok" for *_, contact in cells) >= 36
