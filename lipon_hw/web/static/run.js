// A run's live page: the run's header, the operator's buttons, alarms and the run log;
// the body is the deposition's or the cell test's module, fed by `Live`.

import { api, clock, el, Live, setToken, token } from "./api.js";
import { DepositionPage } from "./deposition.js";
import { CellTestPage } from "./celltest.js";
import { ScreeningPage } from "./screening.js";

const runId = Number(location.pathname.split("/").filter(Boolean).pop());
const $ = (id) => document.getElementById(id);
const LOG_LINES = 2000;

const ui = {
  api,
  status(status, message) {
    $("status").textContent = status;
    $("status").className = "status " + status;
    $("message").textContent = message || "";
  },
  seen: new Set(),
  // an alarm read from the store and the same one replayed live are shown once
  alarm(t, a, live) {
    const key = `${t}|${a.source}|${a.message}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const row = el("li", { class: "sev-" + a.severity },
      el("time", {}, clock(t)), ` ${a.severity} · ${a.source}: ${a.message}`);
    $("alarms").prepend(row);
    $("alarm-count").textContent = String($("alarms").children.length);
    this.log(t, `alarm (${a.severity}, ${a.source}): ${a.message}`);
    if (live) row.classList.add("new");
  },
  log(t, text) {
    const box = $("log");
    box.prepend(el("li", {}, el("time", {}, clock(t)), " " + text));
    while (box.children.length > LOG_LINES) box.lastChild.remove();
  },
  resetLog() { this.seen.clear(); $("log").replaceChildren(); $("alarms").replaceChildren(); $("alarm-count").textContent = "0"; },
  held(on, why) { $("held").hidden = !on; $("held").title = why || ""; },
  say(text, bad) { $("said").textContent = text; $("said").className = bad ? "refused" : "done"; },
};

async function act(action) {
  try {
    const done = await api(`/api/runs/${runId}/${action}`, "POST");
    ui.say(done.detail, false);
  } catch (err) {
    ui.say(`${action} refused (${err.status}): ${err.message}`, true);
  }
}

async function main() {
  $("token").value = token();
  $("token").addEventListener("change", () => { setToken($("token").value.trim()); location.reload(); });
  for (const a of ["pause", "continue", "abort"]) $(a).addEventListener("click", () => act(a));
  let run;
  for (let wait = 1000; ; wait = Math.min(2 * wait, 10000)) {
    try { run = await api(`/api/runs/${runId}`); break; } catch (err) {
      if (err.status === 401 || err.status === 403 || err.status === 404) {
        ui.say(`run ${runId} cannot be read (${err.status}): ${err.message}`, true);
        return;
      }
      ui.say(`run ${runId} cannot be read (${err.message}); trying again`, true);
      await new Promise((r) => setTimeout(r, wait));
    }
  }
  document.title = `run ${runId}: ${run.name}`;
  $("name").textContent = `run ${runId} · ${run.name}`;
  $("kind").textContent = run.kind + (run.sample ? ` · sample ${run.sample}` : "");
  if (run.sample) $("kind").append(" ", el("a", { href: `/samples/${encodeURIComponent(run.sample)}` }, "lineage"));
  const body = $("body");
  const page = run.kind === "cycling" ? new CellTestPage(body, run, ui) : run.kind === "screening" ? new ScreeningPage(body, run, ui) : new DepositionPage(body, run, ui);
  window.liponPage = page;
  const live = new Live(runId, {
    onEvents: (events) => page.events(events),
    onResync: () => page.load(),
    onLater: page.fill ? () => page.fill() : null,
    onState: (s) => { $("link").textContent = s; },
  });
  live.resync();
}

main();
