// The REST API and the live WebSocket, as this page's user: the token typed in the page
// (kept in this tab's sessionStorage) goes as `Authorization: Bearer`, and on the
// WebSocket, which a browser cannot give headers, as the `access_token` query parameter.
// A loopback server without tokens needs none.

const KEY = "lipon-hw.token";
const FILL_MS = 2500;

export function token() { return sessionStorage.getItem(KEY) || ""; }
export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t); else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

export async function api(path, method = "GET") {
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  const res = await fetch(path, { method, headers });
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  if (!res.ok) throw new ApiError(res.status, (body && body.detail) || res.statusText);
  return body;
}

// every page of a run's readings: {quantity: {t_s: [], value: []}}
export async function allReadings(runId, sinceT = null) {
  const out = {};
  let next = `/api/runs/${runId}/readings?limit=100000` + (sinceT == null ? "" : `&since_t=${sinceT}`);
  while (next) {
    const page = await api(next);
    for (const [name, s] of Object.entries(page.series)) {
      const one = (out[name] ||= { t_s: [], value: [] });
      for (let i = 0; i < s.t_s.length; i++) { one.t_s.push(s.t_s[i]); one.value.push(s.value[i]); }
    }
    next = page.next;
  }
  return out;
}

// The run's events, live: `onEvents(list)` for each message, `onResync()` (async: read
// the history again) at the start and whenever the server says events were missed; the
// socket is opened again after a close, waiting longer each time (up to 10 s), from the
// last seq seen — so the page survives a server restart.
export class Live {
  constructor(runId, { onEvents, onResync, onLater, onState }) {
    this.runId = runId; this.onEvents = onEvents; this.onResync = onResync;
    this.onLater = onLater;
    this.onState = onState || (() => {});
    this.lastSeq = 0; this.wait = 500; this.pending = null; this.loading = null;
    this.connect();
  }
  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams({ since_seq: String(this.lastSeq) });
    if (token()) q.set("access_token", token());
    const ws = new WebSocket(`${proto}//${location.host}/ws/runs/${this.runId}?${q}`);
    this.ws = ws;
    ws.onopen = () => { this.wait = 500; this.onState("live"); };
    ws.onmessage = (m) => this.take(JSON.parse(m.data));
    ws.onclose = () => {
      this.onState(`disconnected; again in ${(this.wait / 1000).toFixed(1)} s`);
      setTimeout(() => this.connect(), this.wait);
      this.wait = Math.min(this.wait * 2, 10000);
    };
  }
  take(events) {
    for (const e of events) if (e.seq) this.lastSeq = Math.max(this.lastSeq, e.seq);
    if (events.some((e) => e.kind === "resync")) this.resync();
    if (this.loading) { this.pending.push(...events.filter((e) => e.kind !== "resync")); return; }
    this.onEvents(events.filter((e) => e.kind !== "resync"));
  }
  // read the history; live events that come meanwhile are held, then merged by time
  resync() {
    if (this.loading) return this.loading;
    this.pending = [];
    this.loading = (async () => {
      for (let wait = 1000; ; wait = Math.min(wait * 2, 10000)) {
        try { await this.onResync(); break; } catch (err) {
          this.onState(`history unreadable (${err.message}); again in ${wait / 1000} s`);
          await new Promise((r) => setTimeout(r, wait));
        }
      }
      const held = this.pending;
      this.loading = null; this.pending = null;
      this.onEvents(held);
      // readings the engine had sent but not yet committed when the history was read
      // (it commits at least once a wall second) are read once more, merged by time
      if (this.onLater) setTimeout(() => this.onLater().catch(() => {}), FILL_MS);
    })();
    return this.loading;
  }
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

export function clock(t) {
  if (t == null) return "";
  const s = Math.round(t), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return `${h}:${String(m).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}
