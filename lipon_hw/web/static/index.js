// The list of runs, newest first, each linked to its live page, and its sample to the
// sample's lineage; read again every few seconds while the tab is shown.

import { api, el, setToken, token } from "./api.js";

const $ = (id) => document.getElementById(id);

async function show() {
  let runs;
  try { runs = await api("/api/runs"); } catch (err) {
    $("said").textContent = `runs cannot be read (${err.status || "no server"}): ${err.message}`;
    $("said").className = "refused";
    return;
  }
  $("said").textContent = "";
  const rows = [el("tr", {}, ...["run", "name", "kind", "status", "sample", "started", "message"].map((h) => el("th", {}, h)))];
  for (const r of runs.reverse()) {
    rows.push(el("tr", { class: "run-" + r.status },
      el("td", {}, el("a", { href: `/runs/${r.id}` }, String(r.id))),
      el("td", {}, el("a", { href: `/runs/${r.id}` }, r.name)),
      el("td", {}, r.kind), el("td", {}, el("span", { class: "status " + r.status }, r.status)),
      el("td", {}, r.sample ? el("a", { href: `/samples/${encodeURIComponent(r.sample)}` }, r.sample) : ""),
      el("td", {}, r.started_at ? new Date(r.started_at * 1000).toLocaleString() : ""),
      el("td", {}, r.message || "")));
  }
  $("runs").replaceChildren(...rows);
}

$("token").value = token();
$("token").addEventListener("change", () => { setToken($("token").value.trim()); show(); });
show();
setInterval(() => { if (!document.hidden) show(); }, 5000);
