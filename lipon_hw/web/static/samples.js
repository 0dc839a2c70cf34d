// The samples: `/samples` lists them (newest first, a page at a time, found by a part of
// their id); `/samples/{id}` shows one: its film stack, where it came from, what was made
// from it, its screenings and its cell tests, each run linked to its page.

import { api, el, setToken, token } from "./api.js";

const $ = (id) => document.getElementById(id);
const PAGE = 100;
const parts = location.pathname.split("/").filter(Boolean);
const one = parts.length > 1 ? decodeURIComponent(parts[1]) : null;
let offset = 0;

const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const nm = (x) => (x == null ? "–" : x >= 1000 ? (x / 1000).toFixed(3) + " µm" : x.toFixed(1) + " nm");
const sampleLink = (id) => el("a", { href: `/samples/${encodeURIComponent(id)}` }, id);
const runLink = (id, runs) => {
  const r = runs && runs[String(id)];
  return el("a", { href: `/runs/${id}` }, r ? `run ${id} (${r.kind}: ${r.name}, ${r.status})` : `run ${id}`);
};

function table(head, rows, attrs = {}) {
  return el("table", { class: "list", ...attrs },
    el("tr", {}, ...head.map((h) => el("th", {}, h))),
    ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c ?? "")))));
}

function refused(what, err) {
  $("said").textContent = `${what} cannot be read (${err.status || "no server"}): ${err.message}`;
  $("said").className = "refused";
}

async function list() {
  const q = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
  if ($("containing").value.trim()) q.set("containing", $("containing").value.trim());
  let got;
  try { got = await api(`/api/samples?${q}`); } catch (err) { refused("samples", err); return; }
  $("said").textContent = "";
  const shown = got.samples.length;
  $("count").textContent = got.total ? `${offset + 1}–${offset + shown} of ${got.total}` : "none";
  $("older").disabled = offset + shown >= got.total;
  $("newer").disabled = offset === 0;
  $("body").replaceChildren(table(["sample", "substrate", "stored", "layers", "thickness"],
    got.samples.map((s) => [sampleLink(s.id), s.substrate, when(s.created_at), String(s.layers),
      s.layers ? nm(s.thickness_nm) : ""]), { id: "samples", "data-total": String(got.total) }));
}

function section(title, ...body) {
  return el("section", { class: "wide" }, el("h2", {}, title), ...body);
}

async function show(id) {
  $("find").hidden = true;
  $("title").textContent = `sample ${id}`;
  document.title = `sample ${id}`;
  $("title").before(el("a", { href: "/samples" }, "samples"));
  let s;
  try { s = await api(`/api/samples/${encodeURIComponent(id)}`); } catch (err) { refused(`sample ${id}`, err); return; }
  const runs = s.runs || {};
  const out = [el("p", { id: "facts" }, `${s.substrate || "sample"} · first stored ${when(s.created_at)}`)];
  const stack = s.film_stack ? s.film_stack.layers : s.layers;
  const of = s.film_stack ? [" (its ", sampleLink(s.film_stack.of), "'s)"] : [];
  out.push(section("Film stack", ...of, stack.length ? table(
    ["#", "material", "thickness", "rate Å/s", "tool", "run"],
    stack.map((l) => [String(l.seq), l.material + (l.properties && l.properties.partial ? " (partial)" : ""),
      nm(l.thickness_nm), l.rate_A_s == null ? "–" : l.rate_A_s.toFixed(2), l.tool, runLink(l.run_id, runs)]),
    { id: "stack" }) : el("p", {}, "no layers stored")));
  if (s.ancestors) {
    out.push(section("Made from", table(["sample", "relation", "parent", "run"],
      s.ancestors.map((a) => [sampleLink(a.child), a.relation, sampleLink(a.parent), runLink(a.run_id, runs)]))));
  }
  if (s.sheet) {
    const sh = s.sheet;
    out.push(section(`Sheet: ${sh.sheet.rows} × ${sh.sheet.cols} cells`,
      el("p", {}, `${sh.cells} cells linked; screened by `, ...sh.screenings.flatMap((r, i) => [i ? ", " : "", runLink(r, runs)])),
      table(["hard bin", "name", "cells"], sh.bins.map((b) => [String(b.hard_bin), b.name, String(b.cells)]))));
  }
  if (s.screening) {
    out.push(section("Screenings", table(["run", "row", "col", "contact", "bins", "rule"],
      s.screening.map((c) => [runLink(c.run_id, runs), String(c.row), String(c.col), c.contact,
        `${c.soft_bin} ${c.soft_bin_name} / ${c.hard_bin} ${c.hard_bin_name}`, c.rule ?? ""]))));
  }
  if (s.descendants) {
    out.push(section("Made from it", table(["sample", "relation", "from", "run"],
      s.descendants.map((d) => [sampleLink(d.id), d.relation, sampleLink(d.parent), runLink(d.run_id, runs)]))));
  }
  if (s.tests) {
    out.push(section("Cell tests", table(["run", "channel", "cell", "status", "cycles", "last discharge", "mean CE", "bin"],
      s.tests.map((t) => [runLink(t.run_id, runs), String(t.channel), sampleLink(t.sample_id), t.status,
        String(t.cycles), t.last_discharge_uAh == null ? "–" : t.last_discharge_uAh.toFixed(2) + " µAh",
        t.mean_coulombic_efficiency == null ? "–" : (100 * t.mean_coulombic_efficiency).toFixed(2) + " %",
        t.hard_bin_name ?? ""]))));
  }
  $("body").replaceChildren(...out);
  $("body").dataset.sample = id;
}

$("token").value = token();
$("token").addEventListener("change", () => { setToken($("token").value.trim()); location.reload(); });
if (one) show(one);
else {
  $("containing").addEventListener("input", () => { offset = 0; list(); });
  $("older").addEventListener("click", () => { offset += PAGE; list(); });
  $("newer").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); list(); });
  list();
}
