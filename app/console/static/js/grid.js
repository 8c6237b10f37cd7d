// The before/after grid: each prompt × seed generated from the base model and from the edited model through
// the API's generate endpoints, side by side.

import {ApiError, rawFetch, sleep} from "./api.js";
import {announce, clear, h} from "./dom.js";
import {fieldsOf} from "./schema.js";

const FALLBACK_UNRELATED = ["a photograph of a mountain lake", "a bowl of fruit on a table"];

/** Prompts to compare: every target, its anchor, then a few unrelated ones (the preserve concepts first). */
export function defaultPrompts(spec) {
  const edits = spec?.edits || [];
  const targets = edits.map((e) => e.target);
  const taken = new Set([...targets, ...edits.map((e) => e.anchor)].map((x) => x.toLowerCase()));
  const unrelated = [...(spec?.preserve || []), ...FALLBACK_UNRELATED].filter((p) => p && !taken.has(p.toLowerCase()));
  return [...targets, ...unrelated.slice(0, 2)];
}

/** One PNG as an object URL: POST …/generate answers the image, or 202 and then we poll the generation. */
async function generate(url, params, signal) {
  const res = await rawFetch(`${url}?wait=60`, {method: "POST", body: params, accept: "image/png", signal});
  if (res.status === 200) return URL.createObjectURL(await res.blob());
  const body = await res.json().catch(() => null);
  if (res.status !== 202) throw new ApiError(res.status, body);
  const images = body.links.images;
  for (;;) {
    await sleep(1000, signal);
    const r = await rawFetch(images, {accept: "image/png", signal});
    if (r.status === 200) return URL.createObjectURL(await r.blob());
    if (r.status !== 202) throw new ApiError(r.status, await r.json().catch(() => null));
  }
}

function numberInput(id, f, fallback) {
  return h("input", {id, type: "number", step: 1, min: f?.min ?? 1, max: f?.max, value: f?.default ?? fallback,
                     inputmode: "numeric"});
}

export function beforeAfter(view) {
  const urls = [];
  const ctrl = new AbortController();
  const section = h("section", {class: "card", id: "grid", "aria-labelledby": "grid-title"});
  const prompts = h("textarea", {id: "g-prompts", rows: 4, "aria-describedby": "g-prompts-help"},
                    defaultPrompts(view.spec).join("\n"));
  const seeds = h("input", {id: "g-seeds", type: "text", value: "0, 1", inputmode: "numeric",
                            "aria-describedby": "g-seeds-help"});
  const steps = numberInput("g-steps", null, 25);
  const run = h("button", {type: "button", class: "btn primary"}, "Generate before/after");
  const status = h("p", {class: "muted", "aria-live": "polite"});
  const table = h("div", {class: "ba-grid", role: "table", "aria-label": "Before and after images"});
  fieldsOf("GenerateRequest").then((fields) => {
    const f = fields.find((x) => x.name === "steps");
    if (f) { steps.min = f.min ?? 1; steps.max = f.max ?? ""; if (!steps.dataset.touched) steps.value = f.default; }
  }).catch(() => {});
  steps.addEventListener("input", () => { steps.dataset.touched = "1"; });

  section.append(
    h("h2", {id: "grid-title"}, "Before / after"),
    h("p", {class: "help"}, "The same prompts and seeds from the unedited base model and from this erasure."),
    h("div", {class: "grid-fields"},
      h("div", {class: "field wide"}, h("label", {for: "g-prompts"}, "Prompts"), prompts,
        h("p", {class: "help", id: "g-prompts-help"}, "One a line: the targets first, then unrelated prompts.")),
      h("div", {class: "field"}, h("label", {for: "g-seeds"}, "Seeds"), seeds,
        h("p", {class: "help", id: "g-seeds-help"}, "Comma-separated integers.")),
      h("div", {class: "field"}, h("label", {for: "g-steps"}, "Sampling steps"), steps)),
    h("div", {class: "actions"}, run), status, table);

  run.addEventListener("click", async () => {
    const list = prompts.value.split("\n").map((x) => x.trim()).filter(Boolean).slice(0, 12);
    const seedList = seeds.value.split(/[\s,]+/).filter(Boolean).map(Number).filter(Number.isInteger).slice(0, 4);
    if (!list.length || !seedList.length) { status.textContent = "Enter at least one prompt and one seed."; return; }
    run.disabled = true;
    clear(table);
    urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
    table.append(h("div", {role: "row", class: "ba-head"},
      ["Prompt", "Seed", "Before (base model)", "After (erased)"].map((t) => h("span", {role: "columnheader"}, t))));
    const cells = [];
    for (const prompt of list) {
      for (const seed of seedList) {
        const before = h("span", {role: "cell", class: "ba-img", dataset: {col: "before"}}, h("span", {class: "spinner"}, "…"));
        const after = h("span", {role: "cell", class: "ba-img", dataset: {col: "after"}}, h("span", {class: "spinner"}, "…"));
        table.append(h("div", {role: "row", class: "ba-row"},
          h("span", {role: "cell", class: "ba-prompt"}, prompt), h("span", {role: "cell", class: "ba-seed"}, `seed ${seed}`),
          before, after));
        cells.push({prompt, seed, before, after});
      }
    }
    const params = (prompt, seed) => ({prompt, seed, steps: Number(steps.value) || undefined});
    let done = 0;
    const total = cells.length * 2;
    status.textContent = `Generating 0 of ${total} images…`;
    const put = async (cell, url, col) => {
      try {
        const src = await generate(url, params(cell.prompt, cell.seed), ctrl.signal);
        urls.push(src);
        clear(cell[col]).append(h("img", {src, alt: `${col === "before" ? "Base model" : "Erased model"}: ` +
                                                 `${cell.prompt}, seed ${cell.seed}`}));
      } catch (err) {
        if (ctrl.signal.aborted) return;
        clear(cell[col]).append(h("span", {class: "field-error"}, err.message));
      }
      done++;
      status.textContent = `Generating ${done} of ${total} images…`;
    };
    for (const cell of cells) {  // one pair at a time: the workers serve other users too
      await Promise.all([put(cell, `/v1/base-models/${encodeURIComponent(view.base_model)}/generate`, "before"),
                         put(cell, `/v1/erasures/${view.id}/generate`, "after")]);
      if (ctrl.signal.aborted) return;
    }
    status.textContent = `Done: ${total} images.`;
    announce("Before/after grid ready.");
    run.disabled = false;
  });
  section.stop = () => { ctrl.abort(); urls.forEach((u) => URL.revokeObjectURL(u)); };
  return section;
}
