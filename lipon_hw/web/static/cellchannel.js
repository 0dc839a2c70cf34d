// One cell-test channel's data on the page: its samples (t, V, I, cycle: parallel arrays
// in time order, merged by time so history and live events overlap without a sample
// twice), its finished cycles by number (as stored: from REST, then `cycle` events) and
// its impedance spectra by step (REST, then `spectrum` events, which come in pieces).
//
// `fullFrom`: samples from this run-clock time on are all here, not decimated (the
// history's decimated part lies before it); V–Q curves are integrated from those only.

const UAH = 3.6e-3; // coulombs in a µAh

function lowerBound(a, x) {
  let lo = 0, hi = a.length;
  while (lo < hi) { const m = (lo + hi) >> 1; if (a[m] < x) lo = m + 1; else hi = m; }
  return lo;
}

export class ChannelData {
  constructor() {
    this.t = []; this.V = []; this.I = []; this.c = [];
    this.fullFrom = null;          // null: no sample yet (the first one sets it)
    this.cycles = new Map();       // cycle → stats
    this.spectra = new Map();      // step_count → {cycle, t, f: [], re: [], im: [], keys: Set}
  }
  get last() { return this.t.length ? this.t[this.t.length - 1] : -Infinity; }
  get size() { return this.t.length; }

  // samples in time order (a live event's, or a page of history); returns how many were new
  merge(t, V, I, c) {
    const n = t.length;
    if (!n) return 0;
    if (this.fullFrom == null) this.fullFrom = t[0];
    if (t[0] > this.last) { // the common case: all after what is here
      for (let i = 0; i < n; i++) { this.t.push(t[i]); this.V.push(V[i]); this.I.push(I[i]); this.c.push(c[i]); }
      return n;
    }
    if (n < 64) { // a few: each into its place
      let added = 0;
      for (let i = 0; i < n; i++) added += this.insert(t[i], V[i], I[i], c[i]);
      return added;
    }
    const a = this, out = { t: [], V: [], I: [], c: [] };
    let i = 0, j = 0, added = 0;
    const take = (src, k) => { out.t.push(src.t[k]); out.V.push(src.V[k]); out.I.push(src.I[k]); out.c.push(src.c[k]); };
    const b = { t, V, I, c };
    while (i < a.t.length || j < n) {
      if (j >= n || (i < a.t.length && a.t[i] < b.t[j])) take(a, i++);
      else if (i >= a.t.length || b.t[j] < a.t[i]) { take(b, j++); added++; }
      else { take(a, i++); j++; } // the same time: the one here stays
    }
    Object.assign(this, out);
    return added;
  }
  insert(t, V, I, c) {
    if (t > this.last) { this.t.push(t); this.V.push(V); this.I.push(I); this.c.push(c); return 1; }
    const k = lowerBound(this.t, t);
    if (this.t[k] === t) return 0;
    this.t.splice(k, 0, t); this.V.splice(k, 0, V); this.I.splice(k, 0, I); this.c.splice(k, 0, c);
    return 1;
  }

  // cycles' stats (REST's list, or one `cycle` event's): by cycle, the latest stays
  addCycles(list) { for (const s of list) this.cycles.set(s.cycle, s); }
  get lastCE() {
    let best = null;
    for (const [n, s] of this.cycles) if (s.coulombic_efficiency != null && (best == null || n > best[0])) best = [n, s.coulombic_efficiency];
    return best && best[1];
  }
  // [[cycle...], [charge µAh...], [discharge µAh...], [CE %...]] by cycle
  cycleColumns() {
    const rows = [...this.cycles.values()].sort((x, y) => x.cycle - y.cycle);
    return {
      cycle: rows.map((s) => s.cycle),
      charge: rows.map((s) => Math.abs(s.charge_Ah) * 1e6),
      discharge: rows.map((s) => Math.abs(s.discharge_Ah) * 1e6),
      ce: rows.filter((s) => s.coulombic_efficiency != null).map((s) => [s.cycle, 100 * s.coulombic_efficiency]),
    };
  }

  // points of spectra: [t, cycle, step_count, f, re, im] each; a spectrum (an EIS step)
  // measures each frequency once, so a point known (by step and frequency) is kept once
  addSpectrumPoints(points) {
    for (const [t, cycle, step, f, re, im] of points) {
      let s = this.spectra.get(step);
      if (!s) { s = { t, cycle, step, f: [], re: [], im: [], at: new Map() }; this.spectra.set(step, s); }
      const k = s.at.get(f);
      if (k != null) { s.re[k] = re; s.im[k] = im; continue; }
      s.at.set(f, s.f.length); s.f.push(f); s.re.push(re); s.im.push(im);
    }
  }
  // spectra as REST gives them: {t_s, cycle, step_count, f_Hz: [], z_re_ohm: [], z_im_ohm: []}
  addSpectra(list) {
    for (const s of list) {
      this.addSpectrumPoints(s.f_Hz.map((f, k) => [s.t_s, s.cycle, s.step_count, f, s.z_re_ohm[k], s.z_im_ohm[k]]));
    }
  }
  get spectrumPoints() { let n = 0; for (const s of this.spectra.values()) n += s.f.length; return n; }

  // V–Q half-cycles of the last `cycles` cycles, from the full-resolution samples: a new
  // curve where the cycle or the current's sign changes (none at zero current); Q in
  // µAh from 0 at the curve's first sample, trapezoids of |I| over t
  vq(cycles) {
    const out = [];
    const n = this.t.length;
    if (!n) return out;
    const from = this.c[n - 1] - cycles + 1;
    let k = n - 1;
    while (k > 0 && this.c[k - 1] >= from && this.t[k - 1] >= this.fullFrom) k--;
    let cur = null;
    for (; k < n; k++) {
      const I = this.I[k], sign = I > 0 ? 1 : I < 0 ? -1 : 0;
      if (!sign) { cur = null; continue; }
      if (!cur || cur.cycle !== this.c[k] || cur.sign !== sign) {
        cur = { cycle: this.c[k], sign, q: [0], v: [this.V[k]], lastT: this.t[k], lastI: I };
        out.push(cur);
        continue;
      }
      const q = cur.q[cur.q.length - 1] + (Math.abs(I + cur.lastI) / 2) * (this.t[k] - cur.lastT) / UAH;
      cur.q.push(q); cur.v.push(this.V[k]); cur.lastT = this.t[k]; cur.lastI = I;
    }
    return out;
  }
}
