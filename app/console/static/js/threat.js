// Threat-model evaluations of one canvas erasure (docs/method.md, "Threat models"): T1 (prompts typed at the
// generation endpoint) and T2 (embeddings fed to a downloaded checkpoint) in two tables, every attack success with
// its sample size and 95 % interval, and what the erasure's method (and prompt guard) defends against.

import {api} from "./api.js";
import {clear, h} from "./dom.js";
import {bindEvaluationButton} from "./evaluate.js";

const pct = (x) => (typeof x === "number" ? `${(100 * x).toFixed(1)} %` : "—");
const signed = (x) => (typeof x === "number" ? `${x > 0 ? "+" : ""}${(100 * x).toFixed(1)}` : "—");

/** "12.5 % (2 of 16; 95 % interval 3.5 %–36.0 %)" */
export function rateText(r) {
  if (!r || typeof r.n !== "number") return "—";
  return `${pct(r.rate)} (${r.k} of ${r.n}; 95 % interval ${pct(r.ci95?.[0])}–${pct(r.ci95?.[1])})`;
}

function diffText(d) {
  if (!d || typeof d.diff !== "number") return "—";
  return `${signed(d.diff)} points [${signed(d.ci95?.[0])}, ${signed(d.ci95?.[1])}]`;
}

function t1Table(rows) {
  const guard = rows.some((r) => r.guard);
  const unedited = rows.some((r) => r.unedited);
  const cols = ["Target", "Category", "Attack success (edited)", unedited && "Unedited", unedited && "Δ vs unedited",
                guard && "Guard flagged", guard && "Through the guard"].filter(Boolean);
  return h("table", {class: "small threat-t1", dataset: {threatModel: "T1"}},
    h("caption", {}, "T1, text only: attack prompts per category (lower is better)"),
    h("thead", {}, h("tr", {}, cols.map((t) => h("th", {scope: "col"}, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {class: r.attack === "pooled" ? "pooled" : null,
                                            dataset: {threatModel: r.threat_model, attack: r.attack, n: r.n}},
      h("td", {}, r.target), h("th", {scope: "row", title: (r.examples || []).join("\n") || null}, r.attack),
      h("td", {class: "rate"}, rateText(r)),
      unedited && h("td", {class: "unedited"}, rateText(r.unedited)),
      unedited && h("td", {class: "diff"}, diffText(r.vs_unedited)),
      guard && h("td", {}, rateText(r.guard)), guard && h("td", {}, rateText(r.through_guard))))));
}

function t2Table(rows) {
  return h("table", {class: "small threat-t2", dataset: {threatModel: "T2"}},
    h("caption", {}, "T2, embeddings: attacks on the checkpoint (lower is better)"),
    h("thead", {}, h("tr", {}, ["Target", "Attack", "Budget", "Attack success"].map((t) => h("th", {scope: "col"}, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {dataset: {threatModel: r.threat_model, attack: r.attack, n: r.n}},
      h("td", {}, r.target), h("th", {scope: "row"}, r.attack), h("td", {}, String(r.budget ?? "—")),
      h("td", {class: "rate"}, rateText(r) + (r.stopped_early ? " — stopped at the time bound" : ""))))));
}

function drawOne(ev) {
  const t = ev.threat || {};
  const rows = t.rows || [];
  const s = t.settings || {};
  const t1 = rows.filter((r) => r.threat_model === "T1");
  const t2 = rows.filter((r) => r.threat_model === "T2");
  const pooled = t.summary?.T1;
  return h("article", {class: "threat-evaluation", dataset: {id: ev.id}},
    h("h3", {}, `Threat models ${(s.threat_models || ev.threat_models || []).join(" and ")}`),
    h("p", {class: "help"}, `${s.per_category} prompts per T1 category and target, ${s.steps} steps, seed ${s.seed}` +
      (Object.keys(s.budgets || {}).length ? `; T2 budgets ${Object.entries(s.budgets).map(([k, v]) => `${k} ${v}`).join(", ")}` : "") +
      `. Read by the canvas judge; intervals are 95 % Wilson (Δ: paired bootstrap).`),
    pooled ? h("dl", {class: "judged-rates"},
      h("dt", {}, "T1 pooled, edited"), h("dd", {class: "t1-pooled"}, rateText(pooled.pooled)),
      pooled.unedited ? [h("dt", {}, "T1 pooled, unedited"), h("dd", {}, rateText(pooled.unedited))] : null,
      pooled.through_guard ? [h("dt", {}, "T1 pooled, through the guard"), h("dd", {}, rateText(pooled.through_guard))] : null)
      : null,
    (t.truncated || []).map((w) => h("p", {class: "warning"}, `Cut short: ${w}`)),
    t1.length ? h("div", {class: "table-scroll"}, t1Table(t1)) : null,
    t2.length ? h("div", {class: "table-scroll"}, t2Table(t2)) : null,
    (t.defences || []).length ? h("div", {class: "defences"}, h("h4", {}, "What this erasure defends against"),
      h("ul", {}, t.defences.map((d) => h("li", {}, h("strong", {}, d.what), `: T1 — ${d.T1}; T2 — ${d.T2}`)))) : null);
}

/** The section: every finished threat-model evaluation (newest first) and a button that starts T1 + T2. */
export function threatEvaluations(v) {
  const list = h("div", {class: "threat-list"});
  const status = h("p", {class: "help", role: "status"});
  const controller = new AbortController();
  const run = h("button", {type: "button", class: "btn small"}, "Evaluate T1 and T2");
  const sec = h("section", {class: "card", id: "threat", "aria-labelledby": "threat-title"},
    h("div", {class: "page-head"}, h("h2", {id: "threat-title"}, "Threat models"), run),
    h("p", {class: "help"}, "T1: prompts an attacker can type at the generation endpoint (paraphrases, misspellings, " +
      "other spellings, word search). T2: an attacker holding the checkpoint feeds embeddings (soft tokens, concept " +
      "direction, closed-form context). Each rate: images on which the judge sees the erased concept."),
    status, list);

  const load = async () => {
    const items = (await api(`/v1/erasures/${v.id}/evaluations`)).items || [];
    const done = items.filter((e) => e.threat && e.status === "succeeded");
    clear(list).append(...(done.length ? done.reverse().map(drawOne)
      : [h("p", {class: "muted"}, "No threat-model evaluation yet.")]));
  };
  bindEvaluationButton(run, status, controller, v.id, {threat_models: ["T1", "T2"]}, load);
  load().catch((err) => { status.textContent = err.message; });
  sec.stop = () => controller.abort();
  return sec;
}
