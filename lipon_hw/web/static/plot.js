// A small canvas plotter for long live series: each series is drawn, per pixel column,
// as the min..max of its points in that column (so 100k points cost one pass and a few
// hundred line segments), and the canvas is redrawn on an animation frame only after
// data or size changed.

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];
const PAD_FULL = { left: 62, right: 10, top: 18, bottom: 20 };
const COMPACT = { left: 4, right: 4, top: 4, bottom: 4 };

export class Series {
  constructor(name, label, color) {
    this.name = name; this.label = label; this.color = color;
    this.t = []; this.v = [];
  }
  get last() { return this.t.length ? this.t[this.t.length - 1] : -Infinity; }
  // add one point in time order, unless one at that time is here already (history and
  // live events overlap: merged by time, each reading once)
  add(t, v) {
    if (!Number.isFinite(t) || !Number.isFinite(v)) return false;
    if (t > this.last) { this.t.push(t); this.v.push(v); return true; }
    const i = lowerBound(this.t, t);
    if (this.t[i] === t) return false;
    this.t.splice(i, 0, t); this.v.splice(i, 0, v);
    return true;
  }
  clear() { this.t = []; this.v = []; }
}

function lowerBound(a, x) {
  let lo = 0, hi = a.length;
  while (lo < hi) { const m = (lo + hi) >> 1; if (a[m] < x) lo = m + 1; else hi = m; }
  return lo;
}

export function niceTicks(lo, hi, n) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw);
  const out = [];
  for (let x = Math.ceil(lo / step) * step; x <= hi + step * 1e-9; x += step) out.push(x);
  return out;
}

// the canvas sized to its box at the device's pixel ratio and cleared: {g, W, H} in CSS
// pixels, or null while it has no size (hidden)
export function clearedCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const W = canvas.clientWidth, H = canvas.clientHeight;
  if (!W || !H) return null;
  if (canvas.width !== Math.round(W * dpr)) canvas.width = Math.round(W * dpr);
  if (canvas.height !== Math.round(H * dpr)) canvas.height = Math.round(H * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  return { g, W, H };
}

export function fmt(x) {
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-2 || a >= 1e5)) return x.toExponential(1);
  return String(+x.toPrecision(4));
}

export class Plot {
  // opts: {title, log: bool (y on a log scale), height, compact, xUnit, xInteger (x ticks
  // on whole numbers: cycles)}; `drawn`, and the canvas' data-drawn: the pixel columns
  // drawn last time, summed over the series
  constructor(parent, opts = {}) {
    this.opts = opts;
    this.series = [];
    this.marks = [];      // {t, label}: vertical lines (steps, setpoint changes)
    this.levels = [];     // {t0, t1, v, label}: horizontal setpoints over a time span
    this.spans = [];      // {t0, t1|null, label}: shaded spans (holds)
    this.box = document.createElement("div");
    this.box.className = "plot";
    this.canvas = document.createElement("canvas");
    this.canvas.style.height = (opts.height || 150) + "px";
    this.box.appendChild(this.canvas);
    parent.appendChild(this.box);
    this.dirty = true;
    this.frame = 0;
    new ResizeObserver(() => this.changed()).observe(this.canvas);
  }
  add(name, label) {
    const s = new Series(name, label, COLORS[this.series.length % COLORS.length]);
    this.series.push(s);
    return s;
  }
  get points() { return this.series.reduce((n, s) => n + s.t.length, 0); }
  changed() {
    this.dirty = true;
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }
  range() {
    let t0 = Infinity, t1 = -Infinity, v0 = Infinity, v1 = -Infinity;
    for (const s of this.series) {
      if (!s.t.length) continue;
      t0 = Math.min(t0, s.t[0]); t1 = Math.max(t1, s.last);
      for (const v of s.v) {
        if (this.opts.log && !(v > 0)) continue;
        if (v < v0) v0 = v;
        if (v > v1) v1 = v;
      }
    }
    for (const l of this.levels) { if (!this.opts.log || l.v > 0) { v0 = Math.min(v0, l.v); v1 = Math.max(v1, l.v); } }
    if (!(t1 > t0)) { t0 = Number.isFinite(t0) ? t0 : 0; t1 = t0 + 1; }
    if (!(v1 >= v0)) { v0 = this.opts.log ? 1e-9 : 0; v1 = this.opts.log ? 1 : 1; }
    if (this.opts.log) { v0 = Math.log10(v0); v1 = Math.log10(v1); }
    if (v1 === v0) { v0 -= 0.5; v1 += 0.5; }
    const m = (v1 - v0) * 0.05;
    return { t0, t1, v0: v0 - m, v1: v1 + m };
  }
  draw() {
    if (!this.dirty) return;
    this.dirty = false;
    const sized = clearedCanvas(this.canvas);
    if (!sized) return;
    const { g, W, H } = sized;
    const r = this.range();
    if (this.xRange) [r.t0, r.t1] = this.xRange;
    const { t0, t1, v0, v1 } = r;
    const PAD = this.opts.compact ? COMPACT : PAD_FULL;
    const pw = W - PAD.left - PAD.right, ph = H - PAD.top - PAD.bottom;
    const xOf = (t) => PAD.left + ((t - t0) / (t1 - t0)) * pw;
    const yv = (v) => (this.opts.log ? Math.log10(v) : v);
    const yOf = (v) => PAD.top + (1 - (yv(v) - v0) / (v1 - v0)) * ph;
    g.font = "11px sans-serif";
    g.fillStyle = "#f3f0e6";
    for (const s of this.spans) {
      const a = Math.max(xOf(s.t0), PAD.left), b = Math.min(xOf(s.t1 ?? t1), PAD.left + pw);
      if (b > a) g.fillRect(a, PAD.top, b - a, ph);
    }
    g.strokeStyle = "#ccc"; g.fillStyle = "#444"; g.lineWidth = 1;
    g.strokeRect(PAD.left, PAD.top, pw, ph);
    g.textAlign = "right"; g.textBaseline = "middle";
    const yt = this.opts.log
      ? niceTicks(Math.ceil(v0), Math.floor(v1), 4).filter(Number.isInteger).map((e) => 10 ** e)
      : niceTicks(v0, v1, 4);
    for (const v of this.opts.compact ? [] : yt) {
      const y = yOf(v);
      if (y < PAD.top - 1 || y > PAD.top + ph + 1) continue;
      g.fillText(fmt(v), PAD.left - 4, y);
      g.strokeStyle = "#eee"; g.beginPath(); g.moveTo(PAD.left, y); g.lineTo(PAD.left + pw, y); g.stroke();
    }
    g.textAlign = "center"; g.textBaseline = "top";
    let xt = niceTicks(t0, t1, 6);
    if (this.opts.xInteger) xt = xt.filter((t) => Math.abs(t - Math.round(t)) < 1e-6).map(Math.round);
    if (!this.opts.compact) for (const t of xt) g.fillText(fmt(t) + (this.opts.xUnit ?? " s"), xOf(t), PAD.top + ph + 4);
    g.save();
    g.beginPath(); g.rect(PAD.left, PAD.top, pw, ph); g.clip();
    g.setLineDash([2, 3]); g.strokeStyle = "#999";
    for (const m of this.marks) {
      const x = Math.round(xOf(m.t)) + 0.5;
      g.beginPath(); g.moveTo(x, PAD.top); g.lineTo(x, PAD.top + ph); g.stroke();
    }
    g.setLineDash([6, 3]); g.strokeStyle = "#e08000"; g.lineWidth = 1.5;
    for (const l of this.levels) {
      if (this.opts.log && !(l.v > 0)) continue;
      const y = yOf(l.v);
      g.beginPath(); g.moveTo(xOf(l.t0), y); g.lineTo(xOf(l.t1 ?? t1), y); g.stroke();
    }
    g.setLineDash([]); g.lineWidth = 1;
    this.drawn = 0;
    for (const s of this.series) this.drawSeries(g, s, t0, t1, pw, xOf, yOf);
    this.canvas.dataset.drawn = String(this.drawn);
    g.restore();
    g.textAlign = "left"; g.textBaseline = "top";
    let x = PAD.left + 4;
    if (this.opts.title) { g.fillStyle = "#222"; g.fillText(this.opts.title, x, 3); x += g.measureText(this.opts.title).width + 12; }
    for (const s of this.opts.compact ? [] : this.series) {
      g.fillStyle = s.color; g.fillText("— " + s.label, x, 3);
      x += g.measureText("— " + s.label).width + 10;
    }
  }
  // one vertical segment (min..max) per pixel column, joined column to column
  drawSeries(g, s, t0, t1, pw, xOf, yOf) {
    const PAD = this.opts.compact ? COMPACT : PAD_FULL;
    const n = s.t.length;
    if (!n) return;
    const log = this.opts.log;
    let i = Math.max(lowerBound(s.t, t0) - 1, 0);
    const end = Math.min(lowerBound(s.t, t1) + 1, n);
    const scale = pw / (t1 - t0);
    g.strokeStyle = s.color;
    g.beginPath();
    let started = false;
    while (i < end) {
      const col = Math.floor((s.t[i] - t0) * scale);
      let lo = Infinity, hi = -Infinity, first = NaN, last = NaN;
      for (; i < end && Math.floor((s.t[i] - t0) * scale) === col; i++) {
        const v = s.v[i];
        if (log && !(v > 0)) continue;
        if (Number.isNaN(first)) first = v;
        last = v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      if (Number.isNaN(first)) continue;
      this.drawn++;
      const x = PAD.left + col + 0.5;
      if (!started) { g.moveTo(x, yOf(first)); started = true; } else g.lineTo(x, yOf(first));
      if (hi > lo) { g.moveTo(x, yOf(lo)); g.lineTo(x, yOf(hi)); g.moveTo(x, yOf(last)); }
    }
    g.stroke();
    if (n <= 60) { // few points (one per cycle): each one a dot
      g.fillStyle = s.color;
      for (let j = 0; j < n; j++) if (!log || s.v[j] > 0) g.fillRect(xOf(s.t[j]) - 2, yOf(s.v[j]) - 2, 4, 4);
    }
  }
}
