// Image-judge evaluations of one erasure (NudeNet, CLIP): the flagged rate before/after with its sample size and
// 95 % interval, then each prompt's images from the base model and from the erased one, each with the judge's
// verdict. Images come through the API with the key (fetch -> blob URL), never a URL that carries it.

import {ApiError, api, rawFetch} from "./api.js";
import {clear, h} from "./dom.js";
import {bindEvaluationButton} from "./evaluate.js";

const pct = (x) => (typeof x === "number" ? `${(100 * x).toFixed(1)} %` : "—");

function rateText(r) {
  if (!r) return "—";
  return `${pct(r.rate)} (${r.flagged} of ${r.n}; 95 % interval ${pct(r.ci95?.[0])}–${pct(r.ci95?.[1])})`;
}

function verdictText(v) {
  const what = v.labels?.length ? ` — ${v.labels.join(", ")}` : "";
  return `${v.flagged ? "flagged" : "clear"} (score ${v.score.toFixed(2)})${what}`;
}

async function image(url, alt, urls) {
  const res = await rawFetch(url, {accept: "image/png"});
  if (!res.ok) throw new ApiError(res.status, null);
  const src = URL.createObjectURL(await res.blob());
  urls.push(src);
  return h("img", {src, alt, width: 128, height: 128, class: "judged-image"});
}

function side(row, which, urls) {
  const cell = h("td", {class: `judged-${which}`});
  const verdicts = row[which]?.verdicts || [];
  (row.images?.[which] || []).forEach((url, k) => {
    const fig = h("figure", {class: verdicts[k]?.flagged ? "flagged" : "clear"});
    const caption = h("figcaption", {}, verdicts[k] ? verdictText(verdicts[k]) : "");
    image(url, `${which} erasure: “${row.prompt}”, image ${k + 1}`, urls)
      .then((img) => fig.prepend(img)).catch((err) => fig.prepend(h("p", {class: "field-error"}, err.message)));
    fig.append(caption);
    cell.append(fig);
  });
  return cell;
}

function drawOne(ev, urls) {
  const r = ev.report || {};
  const j = r.judge || {};
  const settings = Object.entries(j).filter(([k]) => k !== "name").map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(", ") : v}`);
  return h("article", {class: "judged-evaluation", dataset: {id: ev.id, judge: ev.judge}},
    h("h3", {}, `Judge: ${j.name || ev.judge}`),
    h("p", {class: "help"}, `${settings.join("; ")}. ${r.prompts} prompts × ${r.samples_per_prompt} images = ` +
      `${r.images_per_side} images per side, seed ${r.seed}.`),
    h("dl", {class: "judged-rates"},
      h("dt", {}, "Flagged before the erasure"), h("dd", {class: "rate-before"}, rateText(r.before)),
      h("dt", {}, "Flagged after the erasure"), h("dd", {class: "rate-after"}, rateText(r.after))),
    h("table", {class: "small judged-prompts"},
      h("thead", {}, h("tr", {}, ["Prompt", "Before", "After"].map((t) => h("th", {scope: "col"}, t)))),
      h("tbody", {}, (r.per_prompt || []).map((row) => h("tr", {},
        h("th", {scope: "row"}, row.prompt, h("br"), h("span", {class: "muted"},
          `${row.before?.flagged ?? 0}/${row.before?.n ?? 0} → ${row.after?.flagged ?? 0}/${row.after?.n ?? 0} flagged`)),
        side(row, "before", urls), side(row, "after", urls))))));
}

/** The section: every finished image-judge evaluation, and a button that starts one with the default judge. */
export function judgedEvaluations(v) {
  const urls = [];
  const list = h("div", {class: "judged-list"});
  const status = h("p", {class: "help", role: "status"});
  const controller = new AbortController();
  const run = h("button", {type: "button", class: "btn small"}, "Evaluate with the judge");
  const sec = h("section", {class: "card", id: "judged", "aria-labelledby": "judged-title"},
    h("div", {class: "page-head"}, h("h2", {id: "judged-title"}, "Judged before/after"), run),
    h("p", {class: "help"}, "Images drawn from the base model and from the erased one (same prompts and seeds), " +
      "each read by the erasure's judge: NudeNet for the nudity preset, CLIP for the named presets."),
    status, list);

  const load = async () => {
    const items = (await api(`/v1/erasures/${v.id}/evaluations`)).items || [];
    const judged = items.filter((e) => e.report && e.status === "succeeded");
    urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
    clear(list).append(...(judged.length ? judged.reverse().map((e) => drawOne(e, urls))
      : [h("p", {class: "muted"}, "No judged evaluation yet.")]));
  };
  bindEvaluationButton(run, status, controller, v.id, {}, load);
  load().catch((err) => { status.textContent = err.message; });
  sec.stop = () => { controller.abort(); urls.forEach((u) => URL.revokeObjectURL(u)); };
  return sec;
}
