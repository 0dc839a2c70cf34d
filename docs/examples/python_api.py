"""lipon-hw from Python: one instrument, a station and its clock, a recipe and a cell test.

Run it with `python docs/examples/python_api.py [DATA_DIR]` (a temporary directory when
none is given); it needs nothing but lipon-hw and takes a few seconds, since every
instrument is the simulated lab's. The tests run it as it is.
"""

import sys
import tempfile

import lipon_hw
from lipon_hw.sim.serve import serve_lab
from lipon_hw.station import load_station


def one_instrument() -> None:
    """A driver on its own, opened by address as one would a PyMeasure instrument. The
    simulated lab is served on TCP here, standing in for an SQM-160 behind a terminal
    server; on hardware the address is the instrument's port."""
    with serve_lab(load_station(), port_base=0) as served:
        address = "socket://" + served.instruments()["qcm"]["tcp"]
        qcm = lipon_hw.open_instrument("sqm160", address)
        try:
            print(f"{qcm.identify()} at {address}: {qcm.frequency_Hz():.1f} Hz, "
                  f"{qcm.thickness_nm():.2f} nm, crystal life {qcm.crystal_life_pct():.0f} %")
        finally:
            lipon_hw.close_instrument(qcm)


def a_station_and_its_clock() -> None:
    """The whole simulated lab, connected; its clock moves when told to."""
    with lipon_hw.connect() as lab:
        gauge = lab.for_role("sputter", "base_gauge")
        print(f"t = {lab.now:5.0f} s: {gauge.pressure_torr():.3g} Torr (vented)")
        lab.for_role("sputter", "valves").pump()
        for _ in range(3):
            lab.advance(600)  # ten simulated minutes, no waiting
            print(f"t = {lab.now:5.0f} s: {gauge.pressure_torr():.3g} Torr")


def a_recipe_and_a_cell_test(data_dir: str) -> None:
    """A shipped recipe and a shipped protocol, found by their bare names, run as
    `lipon-hw run` runs them; their readings come back as pyarrow tables."""
    seed = lipon_hw.run("au_seed", data_dir)
    table = seed.readings()
    print(f"run {seed.run_id} {seed.status}: {seed.summary['thickness_nm']:.2f} nm of Au, "
          f"{table.num_rows} rows × {table.num_columns} columns")
    evaporating = table.filter(table["step_kind"].to_numpy(zero_copy_only=False)
                               == "evaporate")
    print(f"  {evaporating.num_rows} of them while evaporating; "
          f"columns include {', '.join(c for c in table.column_names if 'evap_qcm' in c)}")

    cell = lipon_hw.run("lipon_conductivity", data_dir, workers=1)
    samples, spectra = cell.readings(), cell.spectra()
    sigma = cell.summary["ionic_conductivity_S_cm"]
    print(f"run {cell.run_id} {cell.status}: {samples.num_rows} samples, "
          f"{spectra.num_rows} impedance points, σ = {sigma:.3g} S/cm")
    try:
        frame = samples.to_pandas()  # with pandas installed
    except ImportError:
        print("  (pandas is not installed: the tables stay pyarrow)")
    else:
        print(frame.groupby("step_type")["current_A"].describe())


if __name__ == "__main__":
    one_instrument()
    a_station_and_its_clock()
    if len(sys.argv) > 1:
        a_recipe_and_a_cell_test(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            a_recipe_and_a_cell_test(tmp)
