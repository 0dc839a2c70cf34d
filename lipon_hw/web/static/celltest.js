// A cell test's live page: a grid of channels (status, cycle, last V and I, last CE, a
// small V–t plot each) and, for the channel chosen, its V–t plot and capacity and CE per
// cycle. Samples come from the live events (the server's buffer of the run, then live);
// the channels' status and last CE from the REST API at the start, on every resync, and
// after an alarm or a status change. Capacity and CE per cycle are integrated here from
// the samples (trapezoids of I over t, charge I > 0, discharge I < 0).

import { Plot } from "./plot.js";
import { el } from "./api.js";

const fmtV = (v) => (v == null ? "–" : v.toFixed(3) + " V");
function fmtI(i) {
  if (i == null) return "–";
  const a = Math.abs(i);
  return a >= 1e-3 ? (i * 1e3).toPrecision(3) + " mA" : a >= 1e-6 ? (i * 1e6).toPrecision(3) + " µA" : (i * 1e9).toPrecision(3) + " nA";
}

class Channel {
  constructor(page, ch) {
    this.ch = ch; this.page = page;
    this.cycle = null; this.V = null; this.I = null; this.ce = null; this.status = "?";
    this.lastT = null; this.lastI = null; this.qCharge = 0; this.qDischarge = 0;
    this.tile = el("div", { class: "tile", "data-channel": String(ch), onclick: () => page.choose(ch) });
    this.head = el("div", { class: "tile-head" });
    this.facts = el("div", { class: "facts" });
    this.tile.append(this.head, this.facts);
    this.plot = new Plot(this.tile, { height: 70, compact: true });
    this.v = this.plot.add("V", "V");
    this.capacity = []; // [cycle, discharge µAh, CE]
    this.show();
  }
  sample(t, V, I, cycle) {
    if (!this.v.add(t, V)) return false;
    if (this.lastT != null && cycle === this.cycle) {
      const q = ((I + this.lastI) / 2) * (t - this.lastT) / 3.6e-3; // µAh
      if (q > 0) this.qCharge += q; else this.qDischarge -= q;
    }
    if (this.cycle != null && cycle !== this.cycle) {
      const ce = this.qCharge > 0 ? this.qDischarge / this.qCharge : null;
      this.capacity.push([this.cycle, this.qDischarge, ce]);
      if (ce != null) this.ce = ce;
      this.qCharge = this.qDischarge = 0;
    }
    this.lastT = t; this.lastI = I; this.V = V; this.I = I; this.cycle = cycle;
    return true;
  }
  show() {
    this.tile.className = "tile ch-" + this.status + (this.page.chosen === this.ch ? " chosen" : "");
    this.head.replaceChildren(el("b", {}, `ch ${this.ch}`), " ", el("span", { class: "status " + this.status }, this.status));
    this.facts.replaceChildren(`cycle ${this.cycle ?? "–"} · ${fmtV(this.V)} · ${fmtI(this.I)} · CE ${this.ce == null ? "–" : (100 * this.ce).toFixed(1) + " %"}`);
    this.tile.dataset.samples = String(this.v.t.length);
    this.plot.changed();
  }
}

export class CellTestPage {
  constructor(root, run, ui) {
    this.run = run; this.ui = ui; this.channels = new Map(); this.chosen = null;
    this.grid = el("div", { id: "channels", class: "grid" });
    this.detail = el("div", { id: "detail" });
    root.append(el("section", { class: "wide" }, el("h2", {}, "Channels"), this.grid),
      el("section", { class: "wide" }, el("h2", { id: "detail-title" }, "Channel"), this.detail));
    this.big = new Plot(this.detail, { title: "V–t", height: 180 });
    this.bigV = this.big.add("V", "V");
    this.caps = new Plot(this.detail, { title: "per cycle", height: 140, xUnit: "" });
    this.cap = this.caps.add("cap", "discharge µAh");
    this.ces = new Plot(this.detail, { title: "CE", height: 100, xUnit: "" });
    this.ce = this.ces.add("ce", "CE %");
    this.refreshing = null;
  }
  channel(ch) {
    let c = this.channels.get(ch);
    if (!c) {
      c = new Channel(this, ch);
      this.channels.set(ch, c);
      const tiles = [...this.channels.values()].sort((a, b) => a.ch - b.ch).map((x) => x.tile);
      this.grid.replaceChildren(...tiles);
      if (this.chosen == null) this.choose(ch);
    }
    return c;
  }
  async load() {
    const run = await this.ui.api(`/api/runs/${this.run.id}`);
    this.ui.resetLog();
    for (const a of run.alarms) this.ui.alarm(a.t_s, a, false);
    this.ui.status(run.status, run.message);
    await this.refresh();
  }
  async refresh() {
    let rows;
    try { rows = await this.ui.api(`/api/runs/${this.run.id}/channels`); } catch (err) {
      if (err.status === 404) return; // no channel stored yet
      throw err;
    }
    for (const r of rows) {
      const c = this.channel(r.channel);
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
  events(list) {
    const touched = new Set();
    for (const e of list) {
      if (e.kind === "cell") {
        const d = e.data, c = this.channel(d.channel);
        if (c.status === "?" ) c.status = "running";
        for (let i = 0; i < d.t.length; i++) c.sample(d.t[i], d.V[i], d.I[i], d.cycle[i]);
        touched.add(c);
      } else if (e.kind === "alarm") {
        this.ui.alarm(e.t_s, e.data, true);
        this.refreshSoon();
      } else if (e.kind === "status") {
        this.ui.status(e.data.status, e.data.message);
        this.ui.log(e.t_s, `run ${e.data.status}: ${e.data.message || ""}`);
        this.refreshSoon();
      }
    }
    for (const c of touched) c.show();
    if (touched.has(this.channels.get(this.chosen))) this.showChosen();
    let n = 0;
    for (const c of this.channels.values()) n += c.v.t.length;
    this.grid.dataset.samples = String(n);
    this.grid.dataset.channels = String(this.channels.size);
  }
  choose(ch) {
    const before = this.channels.get(this.chosen);
    this.chosen = ch;
    if (before) before.show();
    this.channels.get(ch)?.show();
    this.showChosen();
  }
  showChosen() {
    const c = this.channels.get(this.chosen);
    if (!c) return;
    document.getElementById("detail-title").textContent = `Channel ${c.ch}`;
    this.bigV.t = c.v.t; this.bigV.v = c.v.v;
    this.cap.t = c.capacity.map((x) => x[0]); this.cap.v = c.capacity.map((x) => x[1]);
    const ce = c.capacity.filter((x) => x[2] != null);
    this.ce.t = ce.map((x) => x[0]); this.ce.v = ce.map((x) => 100 * x[2]);
    this.detail.dataset.cycles = String(c.capacity.length);
    for (const p of [this.big, this.caps, this.ces]) p.changed();
  }
}
