// A deposition's live page: the process plot (one panel per quantity family, one shared
// time axis; setpoints as dashed levels, step starts as dotted lines, holds shaded),
// the step list with where the run stands, the alarms and the run log.

import { Plot } from "./plot.js";
import { allReadings, clock, el } from "./api.js";

// [title, [[quantity, label], ...], log scale]
const PANELS = [
  ["pressure (Torr)", [["chamber_gauge.pressure_torr", "chamber"], ["process_gauge.pressure_torr", "process"]], true],
  ["N2 flow (sccm)", [["n2_mfc.flow_sccm", "N2"]], false],
  ["RF power (W)", [["rf.forward_power_W", "forward"], ["rf.reflected_power_W", "reflected"]], false],
  ["DC bias (V)", [["rf.dc_bias_V", "bias"]], false],
  ["rate (Å/s)", [["qcm.rate_A_s", "rate"]], false],
  ["thickness (nm)", [["qcm.thickness_nm", "thickness"]], false],
];
// a step's parameter → [panel index, value in the panel's unit]
const SETPOINTS = {
  gas: (p) => [[1, p.n2_sccm], [0, p.pressure_mtorr != null ? p.pressure_mtorr * 1e-3 : null]],
  rf: (p) => [[2, p.power_W]],
  deposit: (p) => [[5, p.until_thickness_nm]],
};

function params(step) {
  const p = step.params || {};
  return p[step.kind] && typeof p[step.kind] === "object" ? p[step.kind] : p;
}

function describe(kind, p) {
  const parts = Object.entries(p || {}).filter(([, v]) => typeof v !== "object").slice(0, 4);
  return kind + (parts.length ? " (" + parts.map(([k, v]) => `${k} ${v}`).join(", ") + ")" : "");
}

export class DepositionPage {
  constructor(root, run, ui) {
    this.ui = ui;
    this.run = run;
    const plots = el("div", { id: "plots" });
    this.stepsBox = el("table", { id: "steps", class: "list" });
    root.append(el("section", { class: "wide" }, el("h2", {}, "Process"), plots),
      el("section", {}, el("h2", {}, "Steps"), this.stepsBox));
    this.plots = PANELS.map(([title, names, log]) => {
      const p = new Plot(plots, { title, log, height: 118 });
      for (const [n, label] of names) p.add(n, label);
      return p;
    });
    this.byName = {};
    for (const p of this.plots) for (const s of p.series) this.byName[s.name] = [p, s];
    this.plotsBox = plots;
    this.steps = new Map();
    this.holds = [];
  }

  // the history from the REST API: the run as it stands, then every reading
  async load() {
    const run = await this.ui.api(`/api/runs/${this.run.id}`);
    const history = await allReadings(this.run.id);
    for (const p of this.plots) for (const s of p.series) s.clear();
    this.steps = new Map(run.planned.map((s) => [s.idx, { idx: s.idx, kind: s.kind, status: "planned" }]));
    for (const s of run.steps) {
      this.steps.set(s.idx, { idx: s.idx, kind: s.kind, params: params(s), status: s.status,
                              t_start: s.t_start_s, t_end: s.t_end_s });
    }
    this.holds = [];
    this.ui.held(false);
    this.ui.resetLog();
    for (const a of run.alarms) this.alarm(a.t_s, a, false);
    this.ui.status(run.status, run.message);
    this.merge(history);
    this.loadedTo = Math.max(-Infinity, ...Object.values(history).map((s) => s.t_s[s.t_s.length - 1] ?? -Infinity));
  }

  // the readings since the history's end, read again a little later: any the history
  // lacked (not committed yet when it was read) take their place by time
  async fill() {
    if (!Number.isFinite(this.loadedTo)) return this.merge(await allReadings(this.run.id));
    this.merge(await allReadings(this.run.id, this.loadedTo));
  }

  merge(history) {
    for (const [name, s] of Object.entries(history)) {
      const found = this.byName[name];
      if (found) for (let i = 0; i < s.t_s.length; i++) found[1].add(s.t_s[i], s.value[i]);
    }
    this.redraw();
  }

  events(list) {
    let readings = false;
    for (const e of list) {
      if (e.kind === "readings") {
        for (const [name, v] of Object.entries(e.data)) {
          const found = this.byName[name];
          if (found && found[1].add(e.t_s, v)) readings = true;
        }
      } else if (e.kind === "step") {
        const d = e.data, s = this.steps.get(d.idx) || { idx: d.idx, kind: d.kind };
        if (d.kind) { s.kind = d.kind; s.params = params(d); }
        if (d.status === "running") s.t_start = e.t_s; else s.t_end = e.t_s;
        s.status = d.status;
        this.steps.set(d.idx, s);
        this.ui.log(e.t_s, `step ${d.idx + 1} ${describe(s.kind, d.status === "running" ? s.params : null)} ${d.status}`);
        readings = true;
      } else if (e.kind === "alarm") {
        this.alarm(e.t_s, e.data, true);
        readings = true;
      } else if (e.kind === "status") {
        this.ui.status(e.data.status, e.data.message);
        this.ui.log(e.t_s, `run ${e.data.status}: ${e.data.message || ""}`);
      }
    }
    if (readings) this.redraw();
  }

  alarm(t, a, live) {
    this.ui.alarm(t, a, live);
    const open = this.holds.length && this.holds[this.holds.length - 1].t1 == null;
    if ((a.reaction === "pause" || a.reaction === "hold") && !open) this.holds.push({ t0: t, t1: null });
    else if (a.reaction === "resume" && open) this.holds[this.holds.length - 1].t1 = t;
    const held = this.holds.length > 0 && this.holds[this.holds.length - 1].t1 == null;
    this.ui.held(held, held ? a.message : "");
  }

  redraw() {
    let t0 = Infinity, t1 = -Infinity;
    for (const p of this.plots) for (const s of p.series) if (s.t.length) { t0 = Math.min(t0, s.t[0]); t1 = Math.max(t1, s.last); }
    const steps = [...this.steps.values()].filter((s) => s.t_start != null).sort((a, b) => a.idx - b.idx);
    const levels = this.plots.map(() => []);
    for (const s of steps) {
      const set = SETPOINTS[s.kind];
      if (set) for (const [i, v] of set(s.params || {})) if (v != null) levels[i].push({ t0: s.t_start, v });
    }
    this.plots.forEach((p, i) => {
      p.xRange = Number.isFinite(t0) && t1 > t0 ? [t0, t1] : null;
      p.marks = steps.map((s) => ({ t: s.t_start }));
      p.levels = levels[i].map((l, j) => ({ ...l, t1: levels[i][j + 1] ? levels[i][j + 1].t0 : null }));
      p.spans = this.holds;
      p.changed();
    });
    this.plotsBox.dataset.points = String(this.plots.reduce((n, p) => n + p.points, 0));
    this.drawSteps();
  }

  drawSteps() {
    const rows = [el("tr", {}, el("th", {}, "#"), el("th", {}, "step"), el("th", {}, "status"), el("th", {}, "start"))];
    for (const s of [...this.steps.values()].sort((a, b) => a.idx - b.idx)) {
      rows.push(el("tr", { class: "step-" + s.status }, el("td", {}, String(s.idx + 1)),
        el("td", {}, describe(s.kind, s.params)), el("td", {}, s.status), el("td", {}, clock(s.t_start))));
    }
    this.stepsBox.replaceChildren(...rows);
  }
}
