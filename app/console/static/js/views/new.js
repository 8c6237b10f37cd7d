// The new-erasure form. Method, options and their help text and bounds come from /openapi.json at run time;
// the server's 422 errors (the problem details' errors[].loc) are shown next to the field they name.

import {api, ApiError} from "../api.js";
import {announce, clear, h} from "../dom.js";
import {boundsText, fieldsOf} from "../schema.js";

let rowSeq = 0;

/** A field's schema title for people: "Uce Lambda" -> "UCE lambda", "Timeout S" -> "Timeout (s)". */
function label(f) {
  const t = f.title.replace(/ S$/, " (s)").replace(/\bUce\b/, "UCE");
  return t.split(" ").map((w, i) => (i && w !== "UCE" ? w.toLowerCase() : w)).join(" ");
}

/** A form control for one schema field; .read() gives the JSON value, .changed() whether the user set it. */
function control(f, loc) {
  const id = `f-${loc.replaceAll(".", "-")}`;
  // (a list's default is already in its text box; a null or absent default (FastAPI drops null) of a nullable
  // field whose description explains it ("Left out: …") depends on the method)
  const byMethod = f.default == null && f.nullable && /Left out/.test(f.description);
  const dflt = f.default === undefined || Array.isArray(f.default) || byMethod ? ""
    : f.default === null ? "Default: none."
    : `Default: ${Array.isArray(f.default) ? f.default.map((x) => `“${x}”`).join(", ") || "none" : f.default}.`;
  const help = [f.description, boundsText(f), dflt].filter(Boolean).join(" ");
  let input;
  let read;
  if (byMethod && (f.enum || f.type === "boolean")) {
    // The default depends on the method (e.g. UCE's protocol): "(default)" sends nothing, so the server decides.
    const values = f.enum || [true, false];
    input = h("select", {id, name: loc}, h("option", {value: "", selected: true}, "(default)"),
      values.map((v) => h("option", {value: String(v)}, f.enum ? v : v ? "on" : "off")));
    read = () => (input.value === "" ? null : f.enum ? input.value : input.value === "true");
  } else if (f.enum) {
    input = h("select", {id, name: loc}, f.enum.map((v) => h("option", {value: v, selected: v === f.default}, v)));
    read = () => input.value;
  } else if (f.type === "boolean") {
    input = h("input", {id, name: loc, type: "checkbox", checked: f.default === true});
    read = () => input.checked;
  } else if (f.type === "number" || f.type === "integer") {
    input = h("input", {id, name: loc, type: "number", inputmode: f.type === "integer" ? "numeric" : "decimal",
                        step: f.type === "integer" ? 1 : "any", min: f.min ?? f.exclusiveMin, max: f.max,
                        placeholder: f.default ?? ""});
    read = () => (input.value === "" ? null : Number(input.value));
  } else if (f.type === "array" && f.items?.type === "integer") {
    input = h("input", {id, name: loc, type: "text", inputmode: "numeric", placeholder: "e.g. 0, 1, -1",
                        value: Array.isArray(f.default) ? f.default.join(", ") : ""});
    read = () => (input.value.trim() === "" ? null
      : input.value.split(/[\s,]+/).filter(Boolean).map((x) => (/^-?\d+$/.test(x) ? Number(x) : x)));
  } else if (f.type === "array") {
    input = h("textarea", {id, name: loc, rows: 3}, Array.isArray(f.default) ? f.default.join("\n") : "");
    read = () => {
      const v = input.value.split("\n").map((x) => x.trim()).filter(Boolean);
      return v.length || !byMethod ? v : null;  // emptied: the method's default
    };
  } else {
    input = h("input", {id, name: loc, type: "text", maxlength: f.maxLength, value: f.default ?? ""});
    read = () => input.value;
  }
  let touched = false;
  input.addEventListener("input", () => { touched = true; });
  input.addEventListener("change", () => { touched = true; });
  input.setAttribute("aria-describedby", `${id}-help ${id}-err`);
  const wrap = h("div", {class: "field", dataset: {loc}},
    h("label", {for: id}, label(f)), input,
    h("p", {class: "help", id: `${id}-help`}, help),
    h("p", {class: "field-error", id: `${id}-err`}));
  return {wrap, input, read, changed: () => touched, name: f.name};
}

export function renderNew(view, {navigate}) {
  view.append(h("h1", {}, "New erasure"), h("p", {class: "muted", id: "form-loading"}, "Loading the form…"));
  const aborted = {done: false};
  build(view, navigate, aborted).catch((err) => {
    view.append(h("p", {class: "field-error", role: "alert"}, `Could not load the form: ${err.message}`));
  });
  return () => { aborted.done = true; };
}

async function build(view, navigate, aborted) {
  const [models, reqFields, optFields, presets] = await Promise.all([
    api("/v1/base-models"), fieldsOf("ErasureRequest"), fieldsOf("ErasureOptions"),
    api("/v1/presets").catch(() => ({items: []}))]);
  if (aborted.done) return;
  view.querySelector("#form-loading")?.remove();
  const req = Object.fromEntries(reqFields.map((f) => [f.name, f]));

  const summary = h("div", {class: "error-summary", role: "alert", tabindex: "-1", hidden: true});
  const modelSel = h("select", {id: "f-base_model", name: "base_model", required: true,
                                "aria-describedby": "f-base_model-help f-base_model-err"},
    models.items.map((m) => h("option", {value: m.name, disabled: !m.available},
                              `${m.name}${m.available ? "" : " (not installed)"} — ${m.family}`)));
  const modelHelp = h("p", {class: "help", id: "f-base_model-help"});
  const describeModel = () => {
    const m = models.items.find((x) => x.name === modelSel.value);
    modelHelp.textContent = [req.base_model.description, m?.description].filter(Boolean).join(" ");
  };
  modelSel.addEventListener("change", describeModel);
  describeModel();

  const rows = h("div", {class: "edit-rows", id: "edit-rows"});
  const addRow = (target = "", anchor = "") => {
    const i = rowSeq++;
    const n = rows.children.length + 1;
    const t = h("input", {id: `f-target-${i}`, class: "target", type: "text", required: true, value: target,
                          maxlength: req.edits.items?.properties?.target?.maxLength, placeholder: "e.g. a circle"});
    const a = h("input", {id: `f-anchor-${i}`, class: "anchor", type: "text", value: anchor,
                          placeholder: "e.g. a square (empty = the empty concept)"});
    const row = h("fieldset", {class: "edit-row"},
      h("legend", {}, `Edit ${n}`),
      h("div", {class: "field", dataset: {role: "target"}}, h("label", {for: t.id}, "Target (to erase)"), t,
        h("p", {class: "field-error", id: `${t.id}-err`})),
      h("span", {class: "arrow", "aria-hidden": "true"}, "→"),
      h("div", {class: "field", dataset: {role: "anchor"}}, h("label", {for: a.id}, "Anchor (what it becomes)"), a,
        h("p", {class: "field-error", id: `${a.id}-err`})),
      h("button", {type: "button", class: "btn small", "aria-label": `Remove edit ${n}`, onclick: () => {
        if (rows.children.length > 1) { row.remove(); relabel(); }
      }}, "Remove"));
    t.setAttribute("aria-describedby", `${t.id}-err`);
    a.setAttribute("aria-describedby", `${a.id}-err`);
    rows.append(row);
    relabel();
    return t;
  };
  const relabel = () => [...rows.children].forEach((r, i, all) => {
    r.querySelector("legend").textContent = `Edit ${i + 1}`;
    r.querySelector("button").setAttribute("aria-label", `Remove edit ${i + 1}`);
    r.querySelector("button").disabled = all.length === 1;  // at least one edit
  });
  addRow();

  const preserve = h("textarea", {id: "f-preserve", name: "preserve", rows: 3, placeholder: "one concept a line",
                                  "aria-describedby": "f-preserve-help f-preserve-err"});
  const method = control(req.method, "method");
  const timeout = control(req.timeout_s, "timeout_s");
  const options = optFields.map((f) => control(f, `options.${f.name}`));
  // A method's own settings name their method in the schema ("x-method", from the method registry): show them
  // with that method only; the common options show always.
  const showMethodOptions = () => {
    optFields.forEach((f, i) => { options[i].wrap.hidden = Boolean(f.method) && f.method !== method.read(); });
  };
  method.input.addEventListener("change", showMethodOptions);
  showMethodOptions();
  const submit = h("button", {type: "submit", class: "btn primary"}, "Start erasure");

  // A moderation preset (GET /v1/presets): its edits come first; yours (rows with a target) after them.
  const presetSel = h("select", {id: "f-preset", name: "preset", "aria-describedby": "f-preset-help f-preset-err"},
    h("option", {value: "", selected: true}, "(none: only the edits below)"),
    presets.items.map((p) => h("option", {value: p.name}, `${p.name} (v${p.version}) — ${p.title}`)));
  const presetHelp = h("p", {class: "help", id: "f-preset-help"});
  const names = h("textarea", {id: "f-preset_params-names", name: "preset_params.names", rows: 3,
                               placeholder: "one name a line", "aria-describedby": "f-preset_params-names-err"});
  const presetAnchor = h("input", {id: "f-preset_params-anchor", name: "preset_params.anchor", type: "text",
                                   "aria-describedby": "f-preset_params-anchor-err"});
  const namesField = h("div", {class: "field", dataset: {loc: "preset_params.names"}},
    h("label", {for: names.id}, "Names to erase"), names, h("p", {class: "field-error", id: `${names.id}-err`}));
  const anchorField = h("div", {class: "field", dataset: {loc: "preset_params.anchor"}},
    h("label", {for: presetAnchor.id}, "Anchor for the names"), presetAnchor,
    h("p", {class: "field-error", id: `${presetAnchor.id}-err`}));
  const chosenPreset = () => presets.items.find((p) => p.name === presetSel.value);
  const describePreset = () => {
    const p = chosenPreset();
    presetHelp.textContent = p ? `${p.description} Targets: ${p.targets}. Preserves: ${p.preserves}.`
      : (req.preset?.description || "");
    namesField.hidden = !p || p.params.names !== "required";
    anchorField.hidden = !p || p.params.anchor === "not accepted";
    presetAnchor.placeholder = p && p.params.anchor !== "not accepted" ? `default: ${p.params.anchor}` : "";
  };
  presetSel.addEventListener("change", describePreset);
  describePreset();

  const form = h("form", {class: "card", id: "new-erasure", novalidate: true},
    summary,
    h("div", {class: "field", dataset: {loc: "base_model"}}, h("label", {for: "f-base_model"}, "Base model"), modelSel,
      modelHelp, h("p", {class: "field-error", id: "f-base_model-err"})),
    h("div", {class: "field", dataset: {loc: "preset"}}, h("label", {for: "f-preset"}, "Moderation preset"),
      presetSel, presetHelp, h("p", {class: "field-error", id: "f-preset-err"})),
    namesField, anchorField,
    h("div", {class: "field", dataset: {loc: "edits"}},
      h("h2", {}, "What to erase"),
      h("p", {class: "help"}, "Each target is mapped onto its anchor in the text conditioning."),
      rows,
      h("button", {type: "button", class: "btn small", onclick: () => addRow().focus()}, "Add another edit"),
      h("p", {class: "field-error", id: "f-edits-err"})),
    h("div", {class: "field", dataset: {loc: "preserve"}}, h("label", {for: "f-preserve"}, "Concepts to preserve"), preserve,
      h("p", {class: "help", id: "f-preserve-help"},
        `${req.preserve.description || "Concepts whose images must not change"}. One a line. ${boundsText(req.preserve)}`),
      h("p", {class: "field-error", id: "f-preserve-err"})),
    method.wrap,
    h("details", {class: "advanced"}, h("summary", {}, "Advanced options"),
      h("div", {class: "grid-fields"}, options.map((o) => o.wrap), timeout.wrap)),
    h("div", {class: "actions"}, submit));
  view.append(form);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form, summary);
    let edits = [...rows.children].map((r) => ({target: r.querySelector(".target").value,
                                                 anchor: r.querySelector(".anchor").value}));
    const preset = chosenPreset();
    if (preset) edits = edits.filter((e) => e.target.trim() || e.anchor.trim());  // with a preset, rows are optional
    const body = {base_model: modelSel.value, edits, method: method.read(),
                  preserve: preserve.value.split("\n").map((x) => x.trim()).filter(Boolean)};
    if (preset) {
      body.preset = preset.name;
      const params = {};
      const given = names.value.split("\n").map((x) => x.trim()).filter(Boolean);
      if (!namesField.hidden && given.length) params.names = given;
      if (!anchorField.hidden && presetAnchor.value.trim()) params.anchor = presetAnchor.value.trim();
      if (Object.keys(params).length) body.preset_params = params;
    }
    const opts = {};
    for (const o of options) if (o.changed() && !o.wrap.hidden) opts[o.name] = o.read();
    if (Object.keys(opts).length) body.options = opts;
    if (timeout.changed() && timeout.read() !== null) body.timeout_s = timeout.read();
    submit.disabled = true;
    try {
      const accepted = await api("/v1/erasures", {method: "POST", body});
      announce("Erasure queued.");
      navigate(`/console/erasures/${accepted.id}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && err.errors.length) {
        showErrors(form, summary, rows, err.errors);
      } else {
        summary.hidden = false;
        summary.append(h("p", {}, err.message));
        summary.focus();
      }
    } finally {
      submit.disabled = false;
    }
  });
}

function clearErrors(form, summary) {
  clear(summary);
  summary.hidden = true;
  for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** The element id of the error slot for a 422 loc like ["body", "edits", 0, "target"]. */
function slotFor(form, rows, loc, msg = "") {
  const path = loc[0] === "body" ? loc.slice(1) : loc;
  if (path[0] === "edits" && Number.isInteger(path[1]) && rows.children[path[1]]) {
    const row = rows.children[path[1]];
    // A row-level error (loc ends at the row) concerns the pair: show it where its message points.
    const which = path[2] === "anchor" || (path[2] === undefined && /anchor/i.test(msg)) ? ".anchor" : ".target";
    return row.querySelector(which);
  }
  for (let n = path.length; n > 0; n--) {
    const key = path.slice(0, n).join(".");
    const field = form.querySelector(`.field[data-loc="${CSS.escape(key)}"]`);
    if (field) return field.querySelector("input, select, textarea") || field;
  }
  return null;
}

function showErrors(form, summary, rows, detail) {
  summary.hidden = false;
  summary.append(h("h2", {}, detail.length === 1 ? "One problem:" : `${detail.length} problems:`));
  const list = h("ul", {});
  let first = null;
  for (let e of detail) {
    const el = slotFor(form, rows, e.loc || [], e.msg || "");
    const where = (e.loc || []).filter((p) => p !== "body")
      .map((p, i, all) => (Number.isInteger(p) && all[i - 1] === "edits" ? `edit ${p + 1}` : p))
      .filter((p) => p !== "edits" && p !== "options").join(" › ");
    e = {...e, msg: String(e.msg || "").replace(/^Value error, /, "")};
    if (el) {
      // The <details> holding an advanced option must be open for the message to be seen.
      el.closest("details")?.setAttribute("open", "");
      el.setAttribute("aria-invalid", "true");
      const slot = document.getElementById(`${el.id}-err`) || el.closest(".field")?.querySelector(".field-error");
      if (slot) slot.textContent = slot.textContent ? `${slot.textContent} ${e.msg}` : e.msg;
      first = first || el;
    }
    list.append(h("li", {}, el ? h("a", {href: `#${el.id}`, onclick: (ev) => { ev.preventDefault(); el.focus(); }},
                                   `${where}: ${e.msg}`) : `${where || "request"}: ${e.msg}`));
  }
  summary.append(list);
  (first || summary).focus();
  announce(`The form has ${detail.length} problem${detail.length === 1 ? "" : "s"}.`);
}
