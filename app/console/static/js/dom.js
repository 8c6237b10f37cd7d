// Tiny DOM helpers: build elements without innerHTML (nothing from the API is ever parsed as HTML).

/** h("a", {href: "/x", class: "btn"}, "text", child) -> element; attrs starting with "on" become listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/** Append strings, nodes and (nested) arrays of them; null/undefined/false are skipped. */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Tell screen readers something happened (a polite live region in the shell). */
export function announce(text) {
  const region = document.getElementById("announce");
  if (region) region.textContent = text;
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
}

/** Seconds between two ISO times, in words ("3.2 s", "4 min 10 s"). */
export function fmtDuration(fromIso, toIso) {
  if (!fromIso || !toIso) return "—";
  return fmtSeconds((new Date(toIso) - new Date(fromIso)) / 1000);
}

export function fmtSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** A number for people: 3 significant digits, scientific below 1e-3. */
export function fmtNum(x) {
  if (x === null || x === undefined || typeof x !== "number" || !isFinite(x)) return "—";
  if (x !== 0 && Math.abs(x) < 1e-3) return x.toExponential(1);
  return Number(x.toPrecision(3)).toString();
}

export function fmtBytes(n) {
  if (!isFinite(n)) return "?";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A labelled progress bar (role=progressbar) whose value set() updates. */
export function progressBar(label) {
  const fill = h("span", {class: "fill"});
  const bar = h("span", {class: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": 0,
                        "aria-valuemax": 100, "aria-valuenow": 0}, fill);
  bar.set = (fraction, text) => {
    const pct = Math.max(0, Math.min(100, Math.round((fraction || 0) * 100)));
    fill.style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", pct);
    bar.setAttribute("aria-valuetext", text ? `${pct}% ${text}` : `${pct}%`);
    bar.dataset.pct = pct;
  };
  return bar;
}

export function statusBadge(status) {
  return h("span", {class: `badge s-${status}`, dataset: {status}}, status);
}

/** An accessible confirmation dialog; resolves true when the user confirms. */
export function confirmDialog(title, text, confirmLabel) {
  return new Promise((resolve) => {
    const dlg = h("dialog", {class: "confirm", "aria-labelledby": "dlg-title"},
      h("h2", {id: "dlg-title"}, title), h("p", {}, text),
      h("div", {class: "actions"},
        h("button", {type: "button", class: "btn", value: "cancel", onclick: () => dlg.close("cancel")}, "Keep it"),
        h("button", {type: "button", class: "btn danger", value: "ok", onclick: () => dlg.close("ok")}, confirmLabel)));
    dlg.addEventListener("close", () => { dlg.remove(); resolve(dlg.returnValue === "ok"); });
    document.body.append(dlg);
    dlg.showModal();
  });
}
