"""Analysis of cell tests: cycling figures, EIS fits, DC polarization, BDF files, plots.

Entry points (SI units inside; positive current charges the cell):

cycles   CycleAccumulator()                              streaming, constant memory
           .feed(t_s, voltage_V, current_A, cycle) -> list[CycleStats]   (arrays or scalars)
           .feed_rows(rows of (t_s, voltage_V, current_A, cycle)) -> list[CycleStats]
           .finish() -> list[CycleStats]
           .state() -> dict (JSON-able);  CycleAccumulator.from_state(dict)
         CycleStats(cycle, charge_Ah, discharge_Ah, charge_Wh, discharge_Wh,
                    coulombic_efficiency, retention, t_end_s)
         summarize(stats, from_cycle=None) -> CycleSummary(cycles, first_cycle, last_cycle,
                    mean_coulombic_efficiency, last_discharge_Ah, reference_discharge_Ah,
                    retention)
eis      fit_spectrum(f_Hz, z_ohm (complex), n_arcs=2, blocking=True) -> EisFit
           EisFit: R0_ohm, arcs (Arc(R_ohm, Q, alpha, tau_s, f_peak_Hz), fastest first),
           tail (BlockingTail(Q, alpha, C_series_F) | DiffusionTail(R_d_ohm, tau_s,
           C_series_F) | None), rms_relative, success, film, film_resistance_ohm,
           R_rel_uncertainty (per arc), film_R_rel_uncertainty, film_resolved,
           film_note (why not resolved), impedance(f_Hz), to_dict()
         ionic_conductivity_S_cm(R_ohm, thickness_nm, area_cm2) -> float
         film_conductivity_S_cm(fit, thickness_nm, area_cm2) -> float | None
lsq      levenberg_marquardt(residuals_of, jacobian_of, xs, lo, hi, ftol=1e-8,
           max_nfev=2000) -> Reached(x, cost, fun, jac, at_bound, converged, nfev)
           bounded least squares from every row of xs at once (the EIS fit's solver)
dcpol    steady_state_current(t_s, current_A, tail_start_fraction=0.1) -> SteadyCurrent
         electronic_conductivity_S_cm(I_ss_A, voltage_V, thickness_nm, area_cm2) -> float
         analyze_dc_polarization(t_s, current_A, voltage_V, thickness_nm, area_cm2)
           -> DcPolarization(steady, voltage_V, sigma_e_S_cm)
bdf      write_bdf(rows, path, metadata, fmt=None, batch_rows=10_000) -> Path
           rows: (t_s, voltage_V, current_A, cycle, step_count, step_id, step_type);
           fmt "csv" or "parquet" (default from the suffix); sidecar <path>.json
         BdfWriter(path, metadata, fmt=None) context manager: .write_rows(rows), .close()
         BdfMetadata(cell_name, unix_start_s, ...);  BDF_COLUMNS (the labels written)
         write_spectrum_csv(rows, path) -> Path
           rows: (t_s, f_Hz, z_re_ohm, z_im_ohm, cycle, step_count)
plots    plot_voltage_capacity(t_s, voltage_V, current_A, cycle, path, cycles=None,
                               max_cycles=6) -> Path
         plot_capacity_ce(stats, path) -> Path
         plot_nyquist(f_Hz, z_ohm, path, fit=None) -> Path

Bad input raises lipon_hw.errors.InputError with one sentence.
"""
