// One erasure: status and timings (live), the report in words and charts, the before/after grid,
// downloads, cancel and delete.

import {api} from "../api.js";
import {barChart, attackRates, shortSite} from "../charts.js";
import {announce, clear, confirmDialog, fmtBytes, fmtDuration, fmtNum, fmtSeconds, fmtTime, h, progressBar,
        statusBadge} from "../dom.js";
import {download} from "../download.js";
import {beforeAfter} from "../grid.js";
import {judgedEvaluations} from "../judged.js";
import {threatEvaluations} from "../threat.js";
import {ACTIVE, watchErasure} from "../live.js";
import {editsText} from "./list.js";

export function renderErasure(view, {params, navigate}) {
  const id = params[0];
  const head = h("div", {class: "page-head"});
  const overview = h("section", {class: "card", id: "overview", "aria-labelledby": "ov-title"});
  const report = h("section", {class: "card", id: "report", "aria-labelledby": "rep-title", hidden: true});
  const deliveries = h("section", {class: "card", id: "deliveries", "aria-labelledby": "del-title", hidden: true});
  const gridSlot = h("div", {});
  const bar = progressBar("Erasure progress");
  let grid = null;
  let judged = null;
  let lastStatus = null;
  view.append(h("p", {}, h("a", {href: "/console/erasures", "data-link": true}, "← All erasures")), head, overview,
              report, deliveries, gridSlot);

  const stop = watchErasure(id, (v) => {
    drawHead(head, v, bar, navigate);
    drawOverview(overview, v);
    if (v.status !== lastStatus) {
      if (lastStatus) announce(`Erasure ${v.status}.`);
      lastStatus = v.status;
      loadDeliveries(deliveries, id);
      if (v.report) drawReport(report, v.report);
      if (v.status === "succeeded" && !grid) { grid = beforeAfter(v); gridSlot.append(grid); }
      // canvas erasures are evaluated per threat model (T1/T2 tables); the others by an image judge
      if (v.status === "succeeded" && !judged) {
        judged = v.base_model === "canvas" ? threatEvaluations(v) : judgedEvaluations(v);
        gridSlot.append(judged);
      }
    }
  }, {onError: (err) => {
    clear(head).append(h("h1", {}, "Erasure"));
    clear(overview).append(h("p", {class: "field-error", role: "alert"},
                             err.status === 404 ? "There is no such erasure for your team." : err.message));
  }});
  return () => { stop(); grid?.stop(); judged?.stop(); };
}

/** The webhook deliveries of this erasure (its own webhook and the tenant's endpoints), one row per event and
 * target with its latest attempt; hidden while there are none. Read again at each status change or on demand. */
async function loadDeliveries(sec, id) {
  let items;
  try {
    items = (await api(`/v1/erasures/${id}/deliveries`)).items || [];
  } catch {
    return;  // the overview already shows why the erasure could not be read
  }
  const latest = new Map();  // target + event id -> its latest attempt (the API lists them oldest first)
  for (const d of items) latest.set(`${d.target}\u0000${d.event_id}`, d);
  if (!latest.size) { sec.hidden = true; return; }
  const rows = [...latest.values()].reverse();
  clear(sec).append(
    h("div", {class: "page-head"}, h("h2", {id: "del-title"}, "Webhook deliveries"),
      h("button", {type: "button", class: "btn small", onclick: () => loadDeliveries(sec, id)}, "Refresh")),
    h("table", {class: "small deliveries"},
      h("thead", {}, h("tr", {}, ["Target", "Event", "Attempts", "Outcome", "Detail", "Last attempt"]
        .map((t) => h("th", {scope: "col"}, t)))),
      h("tbody", {}, rows.map((d) => h("tr", {dataset: {target: d.target, outcome: d.outcome}},
        h("td", {}, d.target === "webhook" ? "this erasure's webhook" : h("code", {}, d.target)),
        h("td", {}, d.type), h("td", {}, String(d.attempt)), h("td", {}, d.outcome), h("td", {}, d.detail || "—"),
        h("td", {}, fmtTime(d.at)))))));
  sec.hidden = false;
}

function drawHead(head, v, bar, navigate) {
  bar.set(v.progress?.fraction, v.progress?.stage || v.status);
  const actions = h("div", {class: "actions"});
  if (ACTIVE.has(v.status)) {
    actions.append(h("button", {type: "button", class: "btn danger", disabled: v.cancel_requested, onclick: async () => {
      if (!await confirmDialog("Cancel this erasure?", `${editsText(v)} will stop; nothing is kept.`, "Cancel erasure")) return;
      try {
        await api(`/v1/erasures/${v.id}/cancel`, {method: "POST"});
        announce("Cancellation requested.");
      } catch (e) { announce(e.message); }
    }}, v.cancel_requested ? "Cancelling…" : "Cancel"));
  } else {
    actions.append(h("button", {type: "button", class: "btn danger", onclick: async () => {
      if (!await confirmDialog("Delete this erasure?",
                               `${editsText(v)} and its checkpoint files are removed from the server for good.`,
                               "Delete")) return;
      try {
        await api(`/v1/erasures/${v.id}`, {method: "DELETE"});
        announce("Erasure deleted.");
        navigate("/console/erasures");
      } catch (e) { announce(e.message); }
    }}, "Delete"));
  }
  clear(head).append(
    h("div", {}, h("h1", {}, editsText(v)),
      h("p", {class: "muted"}, statusBadge(v.status), ` ${v.base_model} · ${v.method} · `, h("code", {}, v.id))),
    actions,
    h("div", {class: "progress-line"}, bar, h("span", {class: "stage", id: "stage"},
      `${Math.round((v.progress?.fraction || 0) * 100)}% ${v.progress?.stage || ""}`)));
}

function drawOverview(sec, v) {
  const dl = h("dl", {class: "facts"});
  const fact = (k, val) => dl.append(h("dt", {}, k), h("dd", {}, val));
  fact("Created", fmtTime(v.created_at));
  fact("Started", fmtTime(v.started_at));
  fact("Finished", fmtTime(v.finished_at));
  fact("Waited in queue", fmtDuration(v.created_at, v.started_at));
  fact("Ran for", fmtDuration(v.started_at, v.finished_at));
  const edits = v.spec?.edits || [];
  if (edits.length > 3) {
    fact("Edits", h("details", {}, h("summary", {}, `all ${edits.length}`),
      h("ul", {class: "edits"}, edits.map((e) => h("li", {}, `${e.target} → ${e.anchor || "(empty)"}`)))));
  }
  if (v.spec?.preserve?.length) fact("Preserved", v.spec.preserve.join("; "));
  if (v.metadata && typeof v.metadata === "object") {
    fact("Metadata", Object.entries(v.metadata).map(([k, x]) => h("span", {class: "chip"}, `${k}: ${x}`)));
  }
  for (const [name, f] of Object.entries(v.artifacts || {})) fact(name, `${fmtBytes(f.size)} · sha256 ${f.sha256.slice(0, 16)}…`);
  const timings = Object.entries(v.timings || {}).filter(([, s]) => typeof s === "number");
  clear(sec).append(h("h2", {id: "ov-title"}, "Status and timings"), dl);
  if (v.error) sec.append(h("p", {class: "field-error", role: "alert"}, `Error: ${v.error}`));
  if (timings.length) {
    sec.append(h("details", {}, h("summary", {}, "Time by stage"),
      h("table", {class: "small"}, h("tbody", {}, timings.map(([k, s]) => h("tr", {}, h("th", {scope: "row"}, k),
                                                                             h("td", {}, fmtSeconds(s))))))));
  }
  if (v.status === "succeeded") sec.append(downloads(v));
}

function downloads(v) {
  const box = h("div", {class: "downloads"});
  const item = (label, format, fallback) => {
    const bar = progressBar(`${label} download`);
    const note = h("span", {class: "muted dl-note", "aria-live": "polite"});
    const btn = h("button", {type: "button", class: "btn", dataset: {format}}, label);
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      bar.hidden = false;
      note.textContent = "starting…";
      try {
        const got = await download(`/v1/erasures/${v.id}/checkpoint?format=${format}`, fallback, (p) => {
          bar.set(p.fraction ?? 0, p.phase);
          note.textContent = p.loaded ? `${p.phase} ${fmtBytes(p.loaded)}${p.total ? ` of ${fmtBytes(p.total)}` : ""}`
            : p.phase;
        });
        note.textContent = `${got.name}, ${fmtBytes(got.size)}; sha256 ${got.sha256 ?? "not checked (insecure context)"}` +
          (got.verified === true ? " ✓ matches the server's ETag" : got.verified === false ? " ✗ does NOT match the ETag" : "");
        note.dataset.sha256 = got.sha256 || "";
        note.dataset.verified = String(got.verified);
      } catch (err) {
        note.textContent = `Download failed: ${err.message}`;
      } finally {
        btn.disabled = false;
      }
    });
    bar.hidden = true;
    box.append(h("div", {class: "dl"}, btn, bar, note));
  };
  item("Download delta (safetensors)", "delta", `erasepro-${v.id}.delta.safetensors`);
  item("Download diffusers export (tar)", "diffusers", `erasepro-${v.id}.tar`);
  // Exact LoRAs (the edit's own rank), exported on demand; a format that cannot carry the edit answers 422 with
  // the sites it cannot address, shown in the note.
  item("Download LoRA, diffusers/PEFT (tar)", "lora", `erasepro-${v.id}-lora.tar`);
  item("Download LoRA, kohya: ComfyUI/A1111 (tar)", "kohya", `erasepro-${v.id}-kohya.tar`);
  return h("div", {}, h("h3", {}, "Downloads"), box);
}

/** The report in sentences: what the numbers mean for a reviewer. */
function words(r) {
  const s = r.summary || {};
  const out = [];
  out.push(`${r.n_edits ?? "?"} edit(s) solved as ${r.n_constraints ?? "?"} constraints with the ${r.method} method` +
           `${r.schedule && r.schedule !== "none" ? ` (progressive stage: ${r.schedule})` : ""}.`);
  if (s.kv_residual !== null && s.kv_residual !== undefined) {
    out.push(`On the phrasings it was solved for, the edited keys/values miss their anchors by ${fmtNum(s.kv_residual)} ` +
             `(relative; 0 means each target now reads exactly as its anchor).`);
  }
  if (typeof s.kv_heldout_residual === "number") {
    out.push(`On ${r.n_heldout ?? "some"} held-out phrasings never used by the solve, the leak is ${fmtNum(s.kv_heldout_residual)} ` +
             `(how far the target still is from its anchor).`);
  }
  if (typeof s.kv_preserve_drift === "number") {
    out.push(`Preserved concepts moved by ${fmtNum(s.kv_preserve_drift)} (relative change of their keys/values).`);
  }
  if (typeof s.kv_update_norm === "number") out.push(`The weights changed by ${fmtNum(s.kv_update_norm)} of their norm.`);
  const tm = r.threat_models;
  if (tm?.T1 && tm?.T2) {
    out.push(`What the ${r.method} method defends against, as measured: prompts typed at the generation endpoint ` +
             `(threat model T1) — ${tm.T1}; embeddings fed to a downloaded checkpoint (T2) — ${tm.T2}.`);
  }
  return out;
}

function drawReport(sec, r) {
  const sites = r.sites || [];
  const finals = sites.filter((x) => x.stage === "final");
  const rows = (arr, key) => arr.map((x) => ({label: shortSite(x.site), title: x.site, value: x[key]}));
  const depth = [...sites.filter((x) => x.stage === "progressive").sort((a, b) => a.depth - b.depth), ...finals];
  const charts = [
    barChart(rows(finals, "residual"), {title: "Residual", caption: "per K/V site (0 = exact)", log: true}),
    barChart(rows(finals, "heldout_residual"), {title: "Held-out leak", caption: "per K/V site"}),
    barChart(rows(sites, "preserve_drift"), {title: "Preserve drift", caption: "per site"}),
    barChart(rows(depth, "update_norm"), {title: "Update norm by depth", caption: "‖Δ‖/‖W‖, text encoder then UNet"}),
    barChart(attackRates(r), {title: "Attack success rate", caption: "lower is better", max: 1, percent: true}),
  ].filter(Boolean);
  clear(sec).append(h("h2", {id: "rep-title"}, "Report"), h("div", {class: "prose"}, words(r).map((p) => h("p", {}, p))));
  for (const w of r.warnings || []) sec.append(h("p", {class: "warning"}, `Warning: ${w}`));
  sec.append(h("div", {class: "charts"}, charts));
  sec.hidden = false;
}
