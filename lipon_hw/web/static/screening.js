// A sheet screening's live page: the sheet map (one square per cell, coloured by its soft
// bin, cells not tested yet light grey, the touchdown the prober is at outlined), the bins
// with their counts, percentages and the yield so far, where the prober stands, and one
// cell's metrics on hover (a click keeps it shown). The sheet, its touchdowns and bins are
// read once from the REST API; the cells at load and at every resync (from the cursor of
// the last read), and from the live `screen_cells` events between: each cell is taken
// once, by its row and column, whichever way it came first.

import { clock, el } from "./api.js";

const UNTESTED = "#e4e4e4";
const FAULT = "#7f7f7f";
const PASS = ["#2ca02c", "#98df8a", "#1b7a1b", "#c7e9c0"];
const FAIL = ["#d62728", "#ff7f0e", "#9467bd", "#1f77b4", "#8c564b", "#e377c2", "#bcbd22",
  "#17becf", "#ff9896", "#c5b0d5", "#c49c94", "#aec7e8"];
const AT = "#0b57d0"; // the touchdown outline
const LABEL_W = 28, LABEL_H = 16, MAX_CELL = 26, MAX_MAP_H = 560;
const MOVING = new Set(["running", "paused"]);
const PREFIX = [[1e9, "G"], [1e6, "M"], [1e3, "k"], [1, ""]];

function pct(n, of) { return of ? (100 * n / of).toFixed(1) + " %" : "–"; }

function value(v, unit) {
  if (v == null || !Number.isFinite(v)) return "–";
  if (unit === "Ω") {
    const [scale, p] = PREFIX.find(([s]) => Math.abs(v) >= s) || [1, ""];
    return `${(v / scale).toPrecision(4)} ${p}Ω`;
  }
  if (unit === "°") return `${v.toFixed(1)}°`;
  if (unit === "V") return `${v.toFixed(4)} V`;
  return `${v.toPrecision(4)}${unit ? " " + unit : ""}`;
}

export class ScreeningPage {
  constructor(root, run, ui) {
    this.run = run; this.ui = ui;
    this.sheet = null; this.cursor = 0; this.status = run.status;
    this.cells = new Map(); // (row - 1) * cols + col - 1 → cell
    this.bins = new Map(); // soft bin → {def, colour, count}
    this.tested = 0; this.passed = 0; this.faults = 0; this.lastT = null;
    this.seen = new Map(); // touchdown → cells taken
    this.done = 0; this.at = 0; // touchdowns complete; index of the first one not
    this.hover = null; this.chosen = null; this.frame = null;
    this.canvas = el("canvas", { id: "sheet-map", "data-tested": "0", "data-total": "0" });
    this.title = el("h2", { id: "sheet-title" }, "Sheet");
    this.progress = el("div", { id: "progress", class: "progress" });
    this.binsBox = el("table", { id: "bins", class: "list" });
    this.hardBox = el("table", { id: "hard-bins", class: "list" });
    this.yieldBox = el("p", { id: "yield" });
    this.cellBox = el("div", { id: "cell", class: "cell-detail" }, "Point at a cell for its metrics; click to keep it.");
    root.append(el("section", { class: "screening" },
      el("div", { class: "sheet-map" }, this.title, this.progress, this.canvas, el("h2", {}, "Cell"), this.cellBox),
      el("div", { class: "sheet-side" }, el("h2", {}, "Bins"), this.binsBox, this.yieldBox,
        el("h2", {}, "Hard bins"), this.hardBox)));
    this.canvas.addEventListener("mousemove", (ev) => this.point(ev));
    this.canvas.addEventListener("mouseleave", () => { this.hover = null; this.changed(); });
    this.canvas.addEventListener("click", (ev) => {
      const k = this.keyAt(ev);
      this.chosen = k === this.chosen ? null : k;
      this.changed();
    });
    window.addEventListener("resize", () => this.changed());
  }

  // --- the history ------------------------------------------------------------------
  async load() {
    const run = await this.ui.api(`/api/runs/${this.run.id}`);
    if (!this.sheet) this.setSheet(await this.ui.api(`/api/runs/${this.run.id}/sheet`));
    await this.readCells();
    this.status = run.status;
    this.ui.status(run.status, run.message);
    this.relog(run.alarms);
    this.changed();
  }

  // the cells stored after the last read (at load, and again a little after a resync:
  // the cells the engine had sent but not yet committed then)
  async readCells() {
    let next = `/api/runs/${this.run.id}/cells?since=${this.cursor}`;
    while (next) {
      const page = await this.ui.api(next);
      for (const c of page.cells) this.take(c);
      this.cursor = page.cursor;
      next = page.next;
    }
  }
  async fill() { await this.readCells(); this.changed(); }

  setSheet(s) {
    this.sheet = s.sheet; this.card = s.card; this.touchdowns = s.touchdowns || [];
    this.metrics = s.metrics;
    let pass = 0, fail = 0;
    for (const b of s.bins) this.addBin(b, b.tester_fault ? FAULT : b.passed ? PASS[pass++ % PASS.length] : FAIL[fail++ % FAIL.length]);
    this.nextPass = pass; this.nextFail = fail;
    const sh = this.sheet;
    this.title.textContent = `Sheet ${sh.id}: ${sh.rows} × ${sh.cols} cells at ${sh.pitch_x_mm} × ${sh.pitch_y_mm} mm` +
      (sh.roll ? `, cut from ${sh.roll}` : "");
    this.canvas.dataset.total = String(sh.rows * sh.cols);
  }
  addBin(b, colour) {
    const bin = { def: b, colour, count: 0 };
    this.bins.set(b.soft_bin, bin);
    return bin;
  }
  // the bin of a cell: the recipe's, or (a recipe that no longer reads) as the cell names it
  binOf(c) {
    const known = this.bins.get(c.soft_bin);
    if (known) return known;
    const fault = c.contact === "lost";
    return this.addBin({ soft_bin: c.soft_bin, name: c.soft_bin_name, hard_bin: c.hard_bin,
      hard_name: c.hard_bin_name, passed: c.passed, tester_fault: fault },
    fault ? FAULT : c.passed ? PASS[this.nextPass++ % PASS.length] : FAIL[this.nextFail++ % FAIL.length]);
  }

  // one cell, once: false when it is here already
  take(c) {
    const sh = this.sheet;
    if (c.row < 1 || c.col < 1 || c.row > sh.rows || c.col > sh.cols) return false;
    const k = (c.row - 1) * sh.cols + c.col - 1;
    if (this.cells.has(k)) return false;
    this.cells.set(k, c);
    const bin = this.binOf(c);
    bin.count++;
    this.tested++;
    if (c.passed) this.passed++;
    if (bin.def.tester_fault) this.faults++;
    if (this.lastT == null || c.t_s > this.lastT) this.lastT = c.t_s;
    this.seen.set(c.touchdown, (this.seen.get(c.touchdown) || 0) + 1);
    const td = this.touchdowns[c.touchdown - 1];
    if (td && this.seen.get(c.touchdown) === td[3]) this.done++;
    while (this.at < this.touchdowns.length &&
           (this.seen.get(this.touchdowns[this.at][0]) || 0) >= this.touchdowns[this.at][3]) this.at++;
    return true;
  }

  // --- live ---------------------------------------------------------------------------
  events(list) {
    let changed = false;
    for (const e of list) {
      if (e.kind === "screen_cells") {
        const fresh = e.data.cells.filter((c) => this.take(c));
        if (fresh.length) { this.logTouchdown(e.t_s, fresh); changed = true; }
      } else if (e.kind === "alarm") {
        this.ui.alarm(e.t_s, e.data, true);
      } else if (e.kind === "status") {
        this.status = e.data.status;
        this.ui.status(e.data.status, e.data.message);
        this.ui.log(e.t_s, `run ${e.data.status}: ${e.data.message || ""}`);
        changed = true;
      }
    }
    if (changed) this.changed();
  }

  logTouchdown(t, cells) {
    const out = new Map();
    for (const c of cells) if (!c.passed) out.set(c.soft_bin_name, (out.get(c.soft_bin_name) || 0) + 1);
    const passed = cells.length - [...out.values()].reduce((a, b) => a + b, 0);
    const tds = [...new Set(cells.map((c) => c.touchdown))].join(", ");
    this.ui.log(t, `touchdown ${tds}: ${cells.length} cells, ${passed} passed` +
      [...out].map(([name, n]) => `, ${n} ${name}`).join(""));
  }

  // the run log from the history: the alarms and each touchdown's cells, by time
  relog(alarms) {
    this.ui.resetLog();
    const byTd = new Map();
    for (const c of this.cells.values()) {
      if (!byTd.has(c.touchdown)) byTd.set(c.touchdown, []);
      byTd.get(c.touchdown).push(c);
    }
    const entries = alarms.map((a) => [a.t_s, () => this.ui.alarm(a.t_s, a, false)]);
    for (const cells of byTd.values()) {
      const t = Math.max(...cells.map((c) => c.t_s));
      entries.push([t, () => this.logTouchdown(t, cells)]);
    }
    entries.sort((a, b) => a[0] - b[0]);
    for (const [, show] of entries) show();
  }

  // --- drawing ------------------------------------------------------------------------
  changed() {
    if (this.frame == null) this.frame = requestAnimationFrame(() => { this.frame = null; this.draw(); });
  }

  geometry() {
    const sh = this.sheet;
    const width = this.canvas.parentElement.clientWidth - LABEL_W - 4;
    const size = Math.max(2, Math.min(MAX_CELL, Math.floor(width / sh.cols),
      Math.floor((MAX_MAP_H - LABEL_H) / sh.rows)));
    return { size, w: LABEL_W + size * sh.cols + 2, h: LABEL_H + size * sh.rows + 2 };
  }

  keyAt(ev) {
    if (!this.sheet) return null;
    const { size } = this.geometry(), r = this.canvas.getBoundingClientRect();
    const col = Math.floor((ev.clientX - r.left - LABEL_W) / size);
    const row = Math.floor((ev.clientY - r.top - LABEL_H) / size);
    if (row < 0 || col < 0 || row >= this.sheet.rows || col >= this.sheet.cols) return null;
    return row * this.sheet.cols + col;
  }
  point(ev) {
    const k = this.keyAt(ev);
    if (k === this.hover) return;
    this.hover = k; this.changed();
  }

  current() {
    if (!MOVING.has(this.status) || this.at >= this.touchdowns.length || !this.card) return null;
    return this.touchdowns[this.at];
  }

  draw() {
    if (!this.sheet) return;
    const sh = this.sheet, g = this.geometry(), s = g.size, dpr = window.devicePixelRatio || 1;
    const cv = this.canvas;
    cv.style.width = g.w + "px"; cv.style.height = g.h + "px";
    if (cv.width !== Math.round(g.w * dpr) || cv.height !== Math.round(g.h * dpr)) {
      cv.width = Math.round(g.w * dpr); cv.height = Math.round(g.h * dpr);
    }
    const x = cv.getContext("2d");
    x.setTransform(dpr, 0, 0, dpr, 0, 0);
    x.clearRect(0, 0, g.w, g.h);
    x.fillStyle = "#666"; x.font = "10px system-ui, sans-serif";
    const every = Math.max(1, Math.ceil(18 / s));
    x.textAlign = "center"; x.textBaseline = "bottom";
    for (let c = 1; c <= sh.cols; c += every) x.fillText(String(c), LABEL_W + (c - 0.5) * s, LABEL_H - 2);
    x.textAlign = "right"; x.textBaseline = "middle";
    for (let r = 1; r <= sh.rows; r += every) x.fillText(String(r), LABEL_W - 4, LABEL_H + (r - 0.5) * s);
    const gap = s >= 6 ? 1 : 0;
    x.textAlign = "center";
    x.font = `bold ${Math.round(s * 0.45)}px system-ui, sans-serif`;
    for (let r = 0; r < sh.rows; r++) {
      for (let c = 0; c < sh.cols; c++) {
        const cell = this.cells.get(r * sh.cols + c), px = LABEL_W + c * s, py = LABEL_H + r * s;
        const bin = cell && this.bins.get(cell.soft_bin);
        x.fillStyle = bin ? bin.colour : UNTESTED;
        x.fillRect(px, py, s - gap, s - gap);
        if (!bin || bin.def.passed) continue;
        x.fillStyle = "#fff";
        if (bin.def.tester_fault && s >= 8) {
          x.strokeStyle = "#fff"; x.lineWidth = 1; x.beginPath();
          x.moveTo(px + 2, py + 2); x.lineTo(px + s - 3, py + s - 3);
          x.moveTo(px + s - 3, py + 2); x.lineTo(px + 2, py + s - 3); x.stroke();
        } else if (s >= 14) {
          x.fillText(String(cell.soft_bin), px + s / 2, py + s / 2 + 1);
        }
      }
    }
    const td = this.current();
    if (td) {
      const rows = Math.min(this.card.rows, sh.rows - td[1] + 1), cols = Math.min(this.card.cols, sh.cols - td[2] + 1);
      x.strokeStyle = AT; x.lineWidth = 3; x.setLineDash([]);
      x.strokeRect(LABEL_W + (td[2] - 1) * s - 1, LABEL_H + (td[1] - 1) * s - 1, cols * s + 1, rows * s + 1);
    }
    for (const [k, colour] of [[this.chosen, "#000"], [this.hover, "#333"]]) {
      if (k == null) continue;
      x.strokeStyle = colour; x.lineWidth = 2;
      x.strokeRect(LABEL_W + (k % sh.cols) * s - 0.5, LABEL_H + Math.floor(k / sh.cols) * s - 0.5, s, s);
    }
    cv.dataset.tested = String(this.tested);
    cv.dataset.touchdown = td ? String(td[0]) : "";
    this.showProgress(td);
    this.showBins();
    this.showCell(); // the cell on show may have been tested since
  }

  showProgress(td) {
    const sh = this.sheet, n = this.touchdowns.length, total = sh.rows * sh.cols;
    const parts = [];
    if (td) {
      const r1 = Math.min(td[1] + this.card.rows - 1, sh.rows), c1 = Math.min(td[2] + this.card.cols - 1, sh.cols);
      parts.push(`touchdown ${td[0]} of ${n} (rows ${td[1]}–${r1}, columns ${td[2]}–${c1})`);
    } else if (n) {
      parts.push(`${this.done} of ${n} touchdowns`);
    }
    parts.push(`${this.tested} of ${total} cells tested`);
    if (this.card) parts.push(`${this.card.rows} × ${this.card.cols} = ${this.card.sites} sites`);
    if (this.lastT != null) parts.push(`run clock ${clock(this.lastT)}`);
    this.progress.textContent = parts.join(" · ");
  }

  showBins() {
    const head = (...names) => el("tr", {}, ...names.map((n) => el("th", { class: n === "cells" || n === "%" ? "num" : "" }, n)));
    const rows = [head("", "soft", "bin", "hard", "cells", "%")];
    const hard = new Map();
    for (const b of this.bins.values()) {
      const d = b.def;
      rows.push(el("tr", { "data-soft-bin": String(d.soft_bin), "data-count": String(b.count),
        class: d.passed ? "bin-pass" : d.tester_fault ? "bin-fault" : "bin-fail", title: d.when ? `when ${d.when}` : "" },
      el("td", {}, el("span", { class: "swatch", style: `background:${b.colour}` })),
      el("td", {}, String(d.soft_bin)), el("td", {}, d.name), el("td", { title: d.hard_name }, String(d.hard_bin)),
      el("td", { class: "num" }, String(b.count)), el("td", { class: "num" }, pct(b.count, this.tested))));
      const h = hard.get(d.hard_bin) || { name: d.hard_name, passed: true, count: 0 };
      h.count += b.count; h.passed &&= d.passed;
      hard.set(d.hard_bin, h);
    }
    const left = this.sheet.rows * this.sheet.cols - this.tested;
    rows.push(el("tr", { class: "bin-untested" }, el("td", {}, el("span", { class: "swatch", style: `background:${UNTESTED}` })),
      el("td", {}, ""), el("td", {}, "not tested yet"), el("td", {}, ""), el("td", { class: "num" }, String(left)), el("td", {}, "")));
    this.binsBox.replaceChildren(...rows);
    const hards = [...hard].sort((a, b) => a[0] - b[0]).map(([n, h]) =>
      el("tr", { "data-hard-bin": String(n), "data-count": String(h.count), class: h.passed ? "bin-pass" : "bin-fail" },
        el("td", {}, String(n)), el("td", {}, h.name), el("td", { class: "num" }, String(h.count)),
        el("td", { class: "num" }, pct(h.count, this.tested))));
    this.hardBox.replaceChildren(head("hard", "bin", "cells", "%"), ...hards);
    const valid = this.tested - this.faults;
    this.yieldBox.dataset.tested = String(this.tested);
    this.yieldBox.dataset.passed = String(this.passed);
    this.yieldBox.replaceChildren(el("b", {}, `yield ${pct(this.passed, this.tested)}`),
      ` (${this.passed} passed of ${this.tested} tested); ${pct(this.passed, valid)} of the ${valid} validly tested` +
      (this.faults ? ` (${this.faults} tester faults set apart)` : ""));
  }

  showCell() {
    const k = this.hover ?? this.chosen;
    if (k == null || !this.sheet) return;
    const sh = this.sheet, row = Math.floor(k / sh.cols) + 1, col = (k % sh.cols) + 1;
    const id = `${sh.id}-R${String(row).padStart(2, "0")}C${String(col).padStart(2, "0")}`;
    const c = this.cells.get(k);
    const head = el("div", { class: "cell-head" }, el("b", {}, id), ` · row ${row}, column ${col}` + (k === this.chosen ? " (kept)" : ""));
    this.cellBox.dataset.cell = id;
    if (!c) { this.cellBox.replaceChildren(head, el("div", {}, "not tested yet")); return; }
    const bin = this.bins.get(c.soft_bin);
    const facts = el("div", {}, el("span", { class: "swatch", style: `background:${bin.colour}` }),
      ` soft bin ${c.soft_bin} ${c.soft_bin_name} · hard bin ${c.hard_bin} ${c.hard_bin_name} · ${c.passed ? "passed" : "failed"}` +
      ` (${c.rule})`);
    const how = el("div", { class: "muted" }, `contact ${c.contact}` + (c.attempts > 1 ? ` after ${c.attempts} touches` : "") +
      ` · site ${c.site} · touchdown ${c.touchdown} · at ${clock(c.t_s)}`);
    const names = this.metrics.length ? this.metrics : Object.keys(c.metrics).map((n) => ({ name: n, quantity: n, unit: "" }));
    const table = el("div", { class: "metrics" }, ...names.filter((m) => m.name in c.metrics).map((m) =>
      el("div", {}, el("span", {}, m.quantity), el("span", { class: "num" }, value(c.metrics[m.name], m.unit)))));
    this.cellBox.replaceChildren(head, facts, how, table);
  }
}
