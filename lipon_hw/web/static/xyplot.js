// A canvas plotter for curves on two measured axes (V–Q, Nyquist), where x is not time
// and may go back and forth: each curve is a polyline in its own order, a point drawn
// only when it lands at least a pixel from the last one drawn (so a curve costs at most
// one segment per pixel it crosses, however many points it has). `equal` gives both axes
// the same units per pixel (a Nyquist plot's semicircles stay round). Redrawn on an
// animation frame after data or size changed; the canvas' `data-drawn` is the number of
// points drawn last time, `data-curves` the curves.

import { clearedCanvas, fmt, niceTicks } from "./plot.js";

const PAD = { left: 58, right: 10, top: 18, bottom: 30 };

export class XYPlot {
  // opts: {title, xLabel, yLabel, height, equal: bool, zeroY: bool (y range from 0)}
  constructor(parent, opts = {}) {
    this.opts = opts;
    this.curves = []; // {x: [], y: [], color, alpha, dots}
    this.legend = []; // [color, label]
    this.box = document.createElement("div");
    this.box.className = "plot";
    this.canvas = document.createElement("canvas");
    this.canvas.style.height = (opts.height || 220) + "px";
    this.box.appendChild(this.canvas);
    parent.appendChild(this.box);
    this.dirty = true; this.frame = 0; this.drawn = 0;
    new ResizeObserver(() => this.changed()).observe(this.canvas);
  }
  set(curves, legend = []) { this.curves = curves; this.legend = legend; this.changed(); }
  get points() { return this.curves.reduce((n, c) => n + c.x.length, 0); }
  changed() {
    this.dirty = true;
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }
  range(pw, ph) {
    let x0 = Infinity, x1 = -Infinity, y0 = this.opts.zeroY ? 0 : Infinity, y1 = -Infinity;
    for (const c of this.curves) {
      for (let i = 0; i < c.x.length; i++) {
        const x = c.x[i], y = c.y[i];
        if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
        if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
      }
    }
    if (!(x1 >= x0)) { x0 = 0; x1 = 1; }
    if (!(y1 >= y0)) { y0 = 0; y1 = 1; }
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const mx = (x1 - x0) * 0.04, my = (y1 - y0) * 0.05;
    x0 -= mx; x1 += mx; y1 += my; if (!this.opts.zeroY) y0 -= my;
    if (this.opts.equal) { // the same units per pixel on both axes: widen the narrower
      const per = Math.max((x1 - x0) / pw, (y1 - y0) / ph);
      x1 = x0 + per * pw; y1 = y0 + per * ph;
    }
    return { x0, x1, y0, y1 };
  }
  draw() {
    if (!this.dirty) return;
    this.dirty = false;
    const sized = clearedCanvas(this.canvas);
    if (!sized) return;
    const { g, W, H } = sized;
    const pw = W - PAD.left - PAD.right, ph = H - PAD.top - PAD.bottom;
    const { x0, x1, y0, y1 } = this.range(pw, ph);
    const xOf = (x) => PAD.left + ((x - x0) / (x1 - x0)) * pw;
    const yOf = (y) => PAD.top + (1 - (y - y0) / (y1 - y0)) * ph;
    g.font = "11px sans-serif"; g.lineWidth = 1;
    g.strokeStyle = "#ccc"; g.strokeRect(PAD.left, PAD.top, pw, ph);
    g.fillStyle = "#444"; g.textAlign = "right"; g.textBaseline = "middle";
    for (const y of niceTicks(y0, y1, 4)) {
      const py = yOf(y);
      g.fillText(fmt(y), PAD.left - 4, py);
      g.strokeStyle = "#eee"; g.beginPath(); g.moveTo(PAD.left, py); g.lineTo(PAD.left + pw, py); g.stroke();
    }
    g.textAlign = "center"; g.textBaseline = "top";
    for (const x of niceTicks(x0, x1, Math.max(2, Math.floor(pw / 90)))) {
      const px = xOf(x);
      g.fillText(fmt(x), px, PAD.top + ph + 3);
      g.strokeStyle = "#eee"; g.beginPath(); g.moveTo(px, PAD.top); g.lineTo(px, PAD.top + ph); g.stroke();
    }
    if (this.opts.xLabel) g.fillText(this.opts.xLabel, PAD.left + pw / 2, PAD.top + ph + 15);
    g.save();
    g.beginPath(); g.rect(PAD.left, PAD.top, pw, ph); g.clip();
    let drawn = 0;
    for (const c of this.curves) drawn += this.drawCurve(g, c, xOf, yOf);
    g.restore();
    this.drawn = drawn;
    this.canvas.dataset.drawn = String(drawn);
    this.canvas.dataset.curves = String(this.curves.length);
    g.textAlign = "left"; g.textBaseline = "top";
    let x = PAD.left + 4;
    const head = [this.opts.title, this.opts.yLabel && `(y: ${this.opts.yLabel})`].filter(Boolean).join(" ");
    if (head) { g.fillStyle = "#222"; g.fillText(head, x, 3); x += g.measureText(head).width + 12; }
    for (const [color, label] of this.legend) {
      g.fillStyle = color; g.fillText("— " + label, x, 3);
      x += g.measureText("— " + label).width + 10;
    }
  }
  // the curve's polyline, a point only where it moved a pixel; its points drawn
  drawCurve(g, c, xOf, yOf) {
    g.globalAlpha = c.alpha ?? 1;
    g.strokeStyle = g.fillStyle = c.color;
    g.beginPath();
    let n = 0, lx = NaN, ly = NaN;
    const last = c.x.length - 1;
    for (let i = 0; i <= last; i++) {
      const px = xOf(c.x[i]), py = yOf(c.y[i]);
      if (!Number.isFinite(px) || !Number.isFinite(py)) continue;
      if (n && i !== last && Math.abs(px - lx) < 1 && Math.abs(py - ly) < 1) continue;
      if (n) g.lineTo(px, py); else g.moveTo(px, py);
      lx = px; ly = py; n++;
      if (c.dots) g.fillRect(px - 1.5, py - 1.5, 3, 3);
    }
    g.stroke();
    g.globalAlpha = 1;
    return n;
  }
}
