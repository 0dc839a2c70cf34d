// The run queue: each lane's running and queued entries in order, then the latest ended;
// submit a recipe or protocol (a file from this computer or one shipped with lipon-hw),
// move a queued entry up or down its lane, cancel one (a running one's run is aborted),
// pause or continue a running one's run. A refusal is shown with the server's sentence.
// The listing is read again every few seconds while the tab is shown (one small request;
// the queue changes rarely) and at once after each action; redrawn only when it changed,
// so a button is not replaced under the operator's pointer.

import { api, ApiError, el, setToken, token } from "./api.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 3000;
const ENDED_SHOWN = 50;
const LIVE = ["running", "queued"];

let drawn = "";         // the listing drawn, as its JSON
let reading = false;    // a read of the listing under way
let again = false;      // and another asked for meanwhile (after an action)
let readRefused = true;  // so the first read clears "reading the queue…"
let shipped = new Map(); // name -> text
let source = null;      // what Submit sends: {from: "file"|"shipped", name}

// a JSON POST as this page's user (api.js's `api` sends no body)
async function post(path, body = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  let res;
  try {
    res = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, `no answer from the server (${err.message})`);
  }
  let doc = null;
  try { doc = await res.json(); } catch { doc = null; }
  if (!res.ok) throw new ApiError(res.status, (doc && doc.detail) || res.statusText);
  return doc;
}

function say(text, bad) { $("said").textContent = text; $("said").className = bad ? "refused" : "done"; }
function sayForm(text, bad) {
  $("submit-said").textContent = text;
  $("submit-said").className = bad ? "refused" : "done";
}

function when(t) {
  if (t == null) return "";
  const d = new Date(t * 1000);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function options(o) {
  const out = [];
  if (o.seed != null) out.push(`seed ${o.seed}`);
  if (o.speed != null) out.push(`speed ×${o.speed.toLocaleString("en")}`);
  return out.join(" · ");
}

// who and when, the full date on hovering
function by(who, t) {
  return el("td", { class: "nowrap", title: t == null ? "" : new Date(t * 1000).toLocaleString() },
    who, el("br"), el("time", {}, when(t)));
}

// a running entry's run that its operator last asked to pause says so (until continued)
const pauseAsked = (e) => e.state === "running" && e.operator_asked === "pause";

function state(e) {
  const shown = el("span", { class: "status " + e.state }, e.state);
  if (!pauseAsked(e)) return shown;
  return el("span", {}, shown, " ", el("span", { class: "status paused asked" },
    `pause asked${e.operator_asked_by ? " by " + e.operator_asked_by : ""}`));
}

function runLink(e) {
  if (e.run_id != null) return el("a", { href: `/runs/${e.run_id}`, class: "run-link" }, `run ${e.run_id}`);
  return e.state === "running" ? "starting…" : "";
}

function sequence(e, lane) {
  const cell = el("td", {}, e.name, " ", el("span", { class: "hint" }, `${e.sequence_name} · ${e.kind}`));
  const others = e.lanes.filter((l) => l !== lane);
  if (lane && others.length) cell.append(el("div", { class: "hint" }, `also in lane ${others.join(", ")}`));
  return cell;
}

function button(label, action, title, disabled, run, cls = "") {
  const b = el("button", { type: "button", class: `${action} ${cls}`.trim(), "data-action": action, title }, label);
  b.disabled = disabled;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await run(); } finally { b.disabled = false; refresh(true); }
  });
  return b;
}

async function act(what, call) {
  try {
    say(await call(), false);
  } catch (err) {
    say(`${what} refused (${err.status || "no server"}): ${err.message}`, true);
  }
}

const move = (e, position) => act(`move of entry ${e.id}`, async () => {
  const moved = await post(`/api/queue/${e.id}/move`, { position });
  return `entry ${e.id} moved to ${position} of lane ${moved.lanes[0]} by ${moved.changed_by}`;
});
const cancel = (e) => act(`cancel of entry ${e.id}`, async () =>
  (await post(`/api/queue/${e.id}/cancel`)).detail);
const runAction = (e, action) => act(`${action} of run ${e.run_id}`, async () =>
  (await api(`/api/runs/${e.run_id}/${action}`, "POST")).detail);

function actions(e, lane, queued) {
  const td = el("td", { class: "actions" });
  if (e.state === "queued") {
    const i = queued.indexOf(e);
    if (lane === e.lanes[0]) {
      td.append(button("↑", "up", `move entry ${e.id} up its lane`, i === 0, () => move(e, i)),
        button("↓", "down", `move entry ${e.id} down its lane`, i === queued.length - 1, () => move(e, i + 2)));
    } else {
      td.append(el("span", { class: "hint" }, `moves in ${e.lanes[0]} `));
    }
    td.append(button("Cancel", "cancel", `take entry ${e.id} out of the queue`, false, () => cancel(e)));
  } else if (e.state === "running") {
    if (e.run_id != null) {
      td.append(button("Pause", "pause", `pause run ${e.run_id}`, pauseAsked(e), () => runAction(e, "pause")),
        button("Continue", "continue", `continue run ${e.run_id}`, !pauseAsked(e), () => runAction(e, "continue")));
    }
    td.append(button("Cancel", "cancel", `cancel entry ${e.id}: its run is aborted`, false, () => cancel(e), "danger"));
  }
  return td;
}

function header(...names) { return el("tr", {}, ...names.map((h) => el("th", {}, h))); }

function laneBox(lane, entries) {
  const queued = entries.filter((e) => e.state === "queued");
  const running = entries.filter((e) => e.state === "running");
  const rows = [header("#", "entry", "state", "sequence", "options", "submitted", "run", "message", "")];
  for (const e of entries) {
    rows.push(el("tr", { "data-entry": String(e.id), "data-state": e.state, class: "entry-" + e.state },
      el("td", {}, e.state === "running" ? "now" : String(queued.indexOf(e) + 1)),
      el("td", {}, String(e.id)), el("td", {}, state(e)), sequence(e, lane),
      el("td", { class: "nowrap" }, options(e.options)), by(e.submitted_by, e.submitted_at),
      el("td", { class: "nowrap" }, runLink(e)), el("td", {}, e.message), actions(e, lane, queued)));
  }
  const said = `${running.length ? "1 running" : "free"} · ${queued.length} queued`;
  return el("section", { class: "lane", id: "lane-" + lane, "data-lane": lane },
    el("h2", {}, `${lane} `, el("span", { class: "hint" }, said)),
    el("table", { class: "list queue" }, ...rows));
}

function endedTable(ended) {
  const rows = [header("entry", "state", "sequence", "lanes", "options", "submitted", "run", "ended", "message")];
  for (const e of ended.slice(0, ENDED_SHOWN)) {
    rows.push(el("tr", { "data-entry": String(e.id), "data-state": e.state, class: "entry-" + e.state },
      el("td", {}, String(e.id)), el("td", {}, state(e)), sequence(e, null),
      el("td", {}, e.lanes.join(", ")), el("td", { class: "nowrap" }, options(e.options)),
      by(e.submitted_by, e.submitted_at), el("td", { class: "nowrap" }, runLink(e)),
      by(e.changed_by || "", e.changed_at), el("td", {}, e.message)));
  }
  if (ended.length > ENDED_SHOWN) {
    rows.push(el("tr", {}, el("td", { colspan: "9", class: "hint" },
      `${ended.length - ENDED_SHOWN} older not shown (lipon-hw queue --json lists them)`)));
  }
  return rows;
}

function draw(listing) {
  const byId = new Map(listing.entries.map((e) => [e.id, e]));
  const lanes = Object.entries(listing.lanes).map(([lane, ids]) => laneBox(lane, ids.map((i) => byId.get(i))));
  if (!lanes.length) lanes.push(el("p", { class: "hint" }, "Nothing is queued or running."));
  $("lanes").replaceChildren(...lanes);
  const ended = listing.entries.filter((e) => !LIVE.includes(e.state)).reverse();
  $("ended").replaceChildren(...endedTable(ended));
  $("queue").dataset.entries = String(listing.entries.length);
}

async function refresh(force = false) {
  if (reading) { again ||= force; return; }
  reading = true;
  try {
    const listing = await api("/api/queue");
    if (readRefused) { say("", false); readRefused = false; }
    $("fresh").textContent = "read " + new Date().toLocaleTimeString();
    const key = JSON.stringify(listing);
    if (force || key !== drawn) { drawn = key; draw(listing); }
  } catch (err) {
    say(`the queue cannot be read (${err.status || "no server"}): ${err.message}`, true);
    readRefused = true;
  } finally {
    reading = false;
    if (again) { again = false; refresh(true); }
  }
}

// --- submitting ---------------------------------------------------------------------

function choose(from, name, text) {
  source = from ? { from, name } : null;
  $("chosen").textContent = from ? `${name} (${from === "file" ? "from this computer" : "shipped"})` : "nothing chosen";
  $("preview").textContent = text || "";
}

async function fileText() {
  const file = $("file").files[0];
  if (!file) throw new Error("no file chosen");
  return { name: file.name, text: await file.text() };
}

async function loadShipped() {
  try {
    const got = await api("/api/queue/shipped");
    shipped = new Map(got.sequences.map((s) => [s.name, s.text]));
  } catch {
    return; // unreadable without a token: the listing's refusal says why
  }
  const keep = $("shipped").value;
  $("shipped").replaceChildren(el("option", { value: "" }, "—"),
    ...[...shipped.keys()].map((n) => el("option", { value: n }, n.replace(/\.yaml$/, ""))));
  $("shipped").value = shipped.has(keep) ? keep : "";
}

function number(input) {
  const raw = input.value.trim();
  if (raw === "") return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : raw; // not a number: the server says what is wrong
}

async function submit(ev) {
  ev.preventDefault();
  if (!source) { sayForm("choose a file or a shipped sequence first", true); return; }
  let name = source.name, text;
  try {
    if (source.from === "file") ({ name, text } = await fileText());
    else text = shipped.get(name);
  } catch (err) {
    sayForm(`${name} cannot be read here (${err.message}); choose it again`, true);
    return;
  }
  const opts = {};
  for (const id of ["seed", "speed"]) if (number($(id)) !== undefined) opts[id] = number($(id));
  $("send").disabled = true;
  sayForm(`sending ${name}…`, false);
  try {
    const e = await post("/api/queue", { name, text, options: opts });
    sayForm(`queued as entry ${e.id} on ${e.lanes.join(", ")}: ${e.name} (${e.kind})`, false);
  } catch (err) {
    sayForm(`${name} refused (${err.status || "no server"}): ${err.message}`, true);
  } finally {
    $("send").disabled = false;
    refresh(true);
  }
}

function main() {
  $("token").value = token();
  $("token").addEventListener("change", () => {
    setToken($("token").value.trim());
    refresh(true);
    loadShipped();
  });
  $("file").addEventListener("change", async () => {
    $("shipped").value = "";
    if (!$("file").files.length) { choose(null); return; }
    try {
      const { name, text } = await fileText();
      choose("file", name, text);
    } catch (err) {
      choose(null);
      sayForm(`the file cannot be read here (${err.message})`, true);
    }
  });
  $("shipped").addEventListener("change", () => {
    const name = $("shipped").value;
    $("file").value = "";
    if (name) choose("shipped", name, shipped.get(name)); else choose(null);
  });
  $("submit").addEventListener("submit", submit);
  refresh(true);
  loadShipped();
  setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
}

main();
