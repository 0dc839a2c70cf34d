// A cell test's live page: a grid of channels (status, cycle, last V and I, last CE, a
// small V–t plot each, from the live events) and, for the channel chosen, its V–t plot,
// V–Q curves of its last cycles, capacity and CE per cycle and its Nyquist plot.
//
// The chosen channel knows its whole history: when it is chosen, and again at every
// resync, its cycles and spectra and its samples come from the REST API (`web/cells.py`:
// the samples decimated up to the start of its last VQ_CYCLES cycles, at full resolution
// from there, as the V–Q curves are integrated from them); live events extend it, merged
// by time (`ChannelData`). Capacity and CE are the store's (`cycle` events live), never
// integrated here; spectra come live as measured (`spectrum` events).

import { Plot } from "./plot.js";
import { XYPlot } from "./xyplot.js";
import { ChannelData } from "./cellchannel.js";
import { el } from "./api.js";

const VQ_CYCLES = 5;        // the V–Q plot's cycles, the last ones
const PAGE = 100000;        // samples per page of full-resolution history

const fmtV = (v) => (v == null ? "–" : v.toFixed(3) + " V");
function fmtI(i) {
  if (i == null) return "–";
  const a = Math.abs(i);
  return a >= 1e-3 ? (i * 1e3).toPrecision(3) + " mA" : a >= 1e-6 ? (i * 1e6).toPrecision(3) + " µA" : (i * 1e9).toPrecision(3) + " nA";
}

class Tile {
  constructor(page, ch) {
    this.ch = ch; this.page = page; this.data = new ChannelData();
    this.status = "?"; this.cycle = null; this.V = null; this.I = null; this.ce = null;
    this.loaded = false; this.stale = false;
    this.tile = el("div", { class: "tile", "data-channel": String(ch), onclick: () => page.choose(ch) });
    this.head = el("div", { class: "tile-head" });
    this.facts = el("div", { class: "facts" });
    this.tile.append(this.head, this.facts);
    this.plot = new Plot(this.tile, { height: 70, compact: true });
    this.v = this.plot.add("V", "V");
    this.show();
  }
  show() {
    const d = this.data, n = d.size;
    if (n) { this.V = d.V[n - 1]; this.I = d.I[n - 1]; this.cycle = d.c[n - 1]; }
    this.ce = d.lastCE ?? this.ce;
    this.tile.className = "tile ch-" + this.status + (this.page.chosen === this.ch ? " chosen" : "");
    this.head.replaceChildren(el("b", {}, `ch ${this.ch}`), " ", el("span", { class: "status " + this.status }, this.status));
    this.facts.replaceChildren(`cycle ${this.cycle ?? "–"} · ${fmtV(this.V)} · ${fmtI(this.I)} · CE ${this.ce == null ? "–" : (100 * this.ce).toFixed(1) + " %"}`);
    this.v.t = d.t; this.v.v = d.V;
    this.tile.dataset.samples = String(n);
    this.plot.changed();
  }
}

export class CellTestPage {
  constructor(root, run, ui) {
    this.run = run; this.ui = ui; this.channels = new Map(); this.chosen = null;
    this.grid = el("div", { id: "channels", class: "grid" });
    this.detail = el("div", { id: "detail", class: "cell-detail" });
    root.append(el("section", { class: "wide" }, el("h2", {}, "Channels"), this.grid),
      el("section", { class: "wide" }, el("h2", { id: "detail-title" }, "Channel"), this.detail));
    const box = (id) => { const b = el("div", { id, class: "cell-plot" }); this.detail.append(b); return b; };
    this.vt = new Plot(box("vt"), { title: "V–t", height: 170 });
    this.vtV = this.vt.add("V", "V");
    this.vq = new XYPlot(box("vq"), { title: "V–Q", xLabel: "Q (µAh)", yLabel: "V", height: 230 });
    this.nyq = new XYPlot(box("nyquist"), { title: "Nyquist", xLabel: "Re Z (Ω)", yLabel: "−Im Z (Ω)", height: 230, equal: true, zeroY: true });
    this.caps = new Plot(box("capacity"), { title: "capacity per cycle (µAh)", height: 150, xUnit: "", xInteger: true });
    this.capDischarge = this.caps.add("discharge", "discharge"); // blue, as in V–Q
    this.capCharge = this.caps.add("charge", "charge");          // red
    this.ces = new Plot(box("ce"), { title: "CE per cycle (%)", height: 150, xUnit: "", xInteger: true });
    this.ce = this.ces.add("ce", "CE");
    this.refreshing = null;
  }
  tile(ch) {
    let c = this.channels.get(ch);
    if (!c) {
      c = new Tile(this, ch);
      this.channels.set(ch, c);
      const tiles = [...this.channels.values()].sort((a, b) => a.ch - b.ch).map((x) => x.tile);
      this.grid.replaceChildren(...tiles);
      if (this.chosen == null) this.choose(ch);
    }
    return c;
  }
  // at the start and at every resync: the run, its channels, the chosen one's history
  async load() {
    const run = await this.ui.api(`/api/runs/${this.run.id}`);
    this.ui.resetLog();
    for (const a of run.alarms) this.ui.alarm(a.t_s, a, false);
    this.ui.status(run.status, run.message);
    for (const c of this.channels.values()) { c.loaded = false; c.stale = true; }
    await this.refresh();
    const c = this.channels.get(this.chosen);
    if (c) await this.history(c);
  }
  async refresh() {
    let rows;
    try { rows = await this.ui.api(`/api/runs/${this.run.id}/channels`); } catch (err) {
      if (err.status === 404) return; // no channel stored yet
      throw err;
    }
    for (const r of rows) {
      const c = this.tile(r.channel);
      c.status = r.status;
      if (r.last_ce != null) c.ce = r.last_ce;
      if (c.cycle == null) c.cycle = r.cycle;
      if (r.last && c.V == null) { c.V = r.last.voltage_V; c.I = r.last.current_A; }
      c.show();
    }
    this.grid.dataset.channels = String(this.channels.size);
  }
  refreshSoon() {
    if (this.refreshing) return;
    this.refreshing = setTimeout(() => { this.refreshing = null; this.refresh().catch(() => {}); }, 1000);
  }
  // a channel's history from the store, merged into what the live events brought; one
  // read at a time per channel, unless a resync made what it reads stale
  history(c) {
    if (c.loading && !c.stale) return c.loading;
    const read = this.readHistory(c).finally(() => { if (c.loading === read) c.loading = null; });
    c.loading = read;
    return read;
  }
  async readHistory(c) {
    const base = `/api/runs/${this.run.id}/channels/${c.ch}`;
    if (c.stale) { c.data = new ChannelData(); c.stale = false; c.loaded = false; } // anew
    const d = c.data;
    if (this.chosen === c.ch) this.detail.dataset.history = "loading";
    const started = performance.now();
    const [cycles, spectra] = await Promise.all([this.ui.api(`${base}/cycles`), this.ui.api(`${base}/spectra`)]);
    d.addCycles(cycles.cycles);
    d.addSpectra(spectra.spectra);
    const done = cycles.cycles, last = done.length ? done[done.length - 1].cycle : 0;
    const before = done.find((s) => s.cycle === last + 1 - VQ_CYCLES); // the running one is last + 1
    const fullFrom = before ? before.t_end_s : null;
    if (fullFrom != null) {
      const width = Math.ceil(this.vt.canvas.clientWidth * (window.devicePixelRatio || 1)) || 1000;
      const points = Math.min(100000, Math.max(1000, 4 * width));
      const dec = await this.ui.api(`${base}/samples?max_points=${points}&until_t=${fullFrom}`);
      d.merge(dec.t_s, dec.V, dec.I, dec.cycle);
    }
    let next = `${base}/samples?limit=${PAGE}` + (fullFrom != null ? `&since_t=${fullFrom}` : "");
    let end = -Infinity;
    while (next) {
      const page = await this.ui.api(next);
      d.merge(page.t_s, page.V, page.I, page.cycle);
      if (page.t_s.length) end = page.t_s[page.t_s.length - 1];
      next = page.next;
    }
    if (c.data !== d) return; // a resync began another read meanwhile
    d.fullFrom = fullFrom ?? -Infinity;
    c.loaded = true; c.loadedTo = end;
    if (this.chosen === c.ch) {
      this.detail.dataset.history = "loaded";
      this.detail.dataset.loadMs = String(Math.round(performance.now() - started));
    }
    c.show();
    this.showChosen();
  }
  // after a resync, the chosen channel's samples since its history's end read again
  // (those not yet committed when it was read), and its cycles and spectra
  async fill() {
    const c = this.channels.get(this.chosen);
    if (!c || !c.loaded) return;
    const base = `/api/runs/${this.run.id}/channels/${c.ch}`;
    let next = `${base}/samples?limit=${PAGE}` + (Number.isFinite(c.loadedTo) ? `&since_t=${c.loadedTo}` : "");
    while (next) {
      const page = await this.ui.api(next);
      c.data.merge(page.t_s, page.V, page.I, page.cycle);
      next = page.next;
    }
    c.data.addCycles((await this.ui.api(`${base}/cycles`)).cycles);
    c.data.addSpectra((await this.ui.api(`${base}/spectra`)).spectra);
    this.detail.dataset.fills = String(+(this.detail.dataset.fills || 0) + 1);
    c.show();
    this.showChosen();
  }
  events(list) {
    const touched = new Set();
    for (const e of list) {
      const d = e.data;
      if (e.kind === "cell") {
        const c = this.tile(d.channel);
        if (c.status === "?") c.status = "running";
        c.data.merge(d.t, d.V, d.I, d.cycle);
        touched.add(c);
      } else if (e.kind === "spectrum") {
        const c = this.tile(d.channel);
        c.data.addSpectrumPoints(d.f_Hz.map((f, k) => [d.t[k], d.cycle[k], d.step_count[k], f, d.z_re_ohm[k], d.z_im_ohm[k]]));
        touched.add(c);
      } else if (e.kind === "cycle") {
        const c = this.tile(d.channel);
        c.data.addCycles([d.stats]);
        touched.add(c);
      } else if (e.kind === "alarm") {
        this.ui.alarm(e.t_s, d, true);
        this.refreshSoon();
      } else if (e.kind === "status") {
        this.ui.status(d.status, d.message);
        this.ui.log(e.t_s, `run ${d.status}: ${d.message || ""}`);
        this.refreshSoon();
      }
    }
    for (const c of touched) c.show();
    if (touched.has(this.channels.get(this.chosen))) this.showChosen();
    let n = 0;
    for (const c of this.channels.values()) n += c.data.size;
    this.grid.dataset.samples = String(n);
    this.grid.dataset.channels = String(this.channels.size);
  }
  choose(ch) {
    const before = this.channels.get(this.chosen);
    this.chosen = ch;
    if (before) before.show();
    const c = this.channels.get(ch);
    if (!c) return;
    c.show();
    this.detail.dataset.history = c.loaded ? "loaded" : "loading";
    this.showChosen();
    if (!c.loaded) {
      this.history(c).catch((err) => this.ui.log(null, `channel ${ch}: history unreadable (${err.message})`));
    }
  }
  showChosen() {
    const c = this.channels.get(this.chosen);
    if (!c) return;
    const d = c.data;
    document.getElementById("detail-title").textContent = `Channel ${c.ch}`;
    this.vtV.t = d.t; this.vtV.v = d.V;
    // V–Q: charge in reds, discharge in blues, the older cycles fainter
    const curves = d.vq(VQ_CYCLES);
    const newest = curves.length ? curves[curves.length - 1].cycle : 0;
    this.vq.set(curves.map((h) => ({
      x: h.q, y: h.v, color: h.sign > 0 ? "#d62728" : "#1f77b4",
      alpha: 1 - 0.75 * Math.min(newest - h.cycle, VQ_CYCLES - 1) / (VQ_CYCLES - 1),
    })), curves.length ? [["#d62728", "charge"], ["#1f77b4", "discharge"],
      ["#777", `cycles ${curves[0].cycle}–${newest}`]] : []);
    const cols = d.cycleColumns();
    this.capCharge.t = cols.cycle; this.capCharge.v = cols.charge;
    this.capDischarge.t = cols.cycle; this.capDischarge.v = cols.discharge;
    this.ce.t = cols.ce.map((x) => x[0]); this.ce.v = cols.ce.map((x) => x[1]);
    // Nyquist: one curve per spectrum, the newest darkest
    const spectra = [...d.spectra.values()].sort((a, b) => a.step - b.step);
    this.nyq.set(spectra.map((s, i) => ({
      x: s.re, y: s.im.map((v) => -v), color: "#2ca02c", dots: s.f.length <= 60,
      alpha: spectra.length > 1 ? 0.25 + 0.75 * i / (spectra.length - 1) : 1,
    })), spectra.length ? [["#2ca02c", `${spectra.length} spectra, cycles ${spectra[0].cycle}–${spectra[spectra.length - 1].cycle}`]] : []);
    Object.assign(this.detail.dataset, {
      channel: String(c.ch), samples: String(d.size), cycles: String(cols.cycle.length),
      vqCurves: String(curves.length), vqPoints: String(curves.reduce((n, h) => n + h.q.length, 0)),
      spectra: String(spectra.length), spectrumPoints: String(d.spectrumPoints),
    });
    for (const p of [this.vt, this.caps, this.ces]) p.changed();
  }
}
