// Small inline-SVG bar charts for the erasure report (no library): one horizontal bar per site.

import {fmtNum, h} from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** A site name for a chart label: "down_blocks.1.attentions.0…attn2.to_v" -> "down1.0 v". */
export function shortSite(site) {
  const m = site.match(/(down|up)_blocks\.(\d+)\.attentions\.(\d+).*to_(k|v)(\.weight)?$/);
  if (m) return `${m[1]}${m[2]}.${m[3]} ${m[4]}`;
  const mid = site.match(/mid_block\.attentions\.(\d+).*to_(k|v)(\.weight)?$/);
  if (mid) return `mid.${mid[1]} ${mid[2]}`;
  const te = site.match(/(text_model|text_encoder[_2]*)?.*layers\.(\d+)\.mlp\.fc2/);
  if (te) return `text L${te[2]}`;
  return site.split(".").slice(-2).join(".");
}

/**
 * Bars for [{label, value, title}]: linear, or log10 when the values span decades (residuals ~1e-7 next to 1).
 * Returns a <figure> with the chart (role=img, described by its caption) or null when there is nothing to draw.
 */
export function barChart(rows, {title, caption, log = false, max = null, percent = false} = {}) {
  rows = rows.filter((r) => typeof r.value === "number" && isFinite(r.value));
  if (!rows.length) return null;
  const labelW = 78, valueW = 58, barW = 170, rowH = 18, pad = 4;
  const width = labelW + barW + valueW, height = rows.length * rowH + pad * 2;
  let scale;
  if (log) {
    const pos = rows.map((r) => r.value).filter((v) => v > 0);
    const lo = pos.length ? Math.floor(Math.log10(Math.min(...pos))) : -12;
    const hi = Math.max(lo + 1, pos.length ? Math.ceil(Math.log10(Math.max(...pos))) : lo + 1);
    scale = (v) => (v <= 0 ? 0 : Math.max(0.02, (Math.log10(v) - lo) / (hi - lo)));
  } else {
    const top = max ?? Math.max(...rows.map((r) => Math.abs(r.value)), 1e-12);
    scale = (v) => Math.min(1, Math.abs(v) / top);
  }
  const svg = s("svg", {viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img",
                        "aria-label": `${title}: ${rows.map((r) => `${r.label} ${fmtNum(r.value)}`).join(", ")}`,
                        class: "chart", preserveAspectRatio: "xMinYMin meet"},
                  s("title", {}, title));
  rows.forEach((r, i) => {
    const y = pad + i * rowH;
    const w = Math.max(1, scale(r.value) * barW);
    const g = s("g", {}, s("title", {}, `${r.title || r.label}: ${r.value}`));
    g.append(s("text", {x: labelW - 6, y: y + rowH * 0.7, "text-anchor": "end", class: "lbl"}, r.label));
    g.append(s("rect", {x: labelW, y: y + 3, width: w, height: rowH - 6, rx: 2, class: "barfill"}));
    g.append(s("text", {x: labelW + barW + 4, y: y + rowH * 0.7, class: "val"},
               percent ? `${Math.round(r.value * 100)}%` : fmtNum(r.value)));
    svg.append(g);
  });
  svg.append(s("line", {x1: labelW, x2: labelW, y1: 0, y2: height, class: "axis"}));
  return h("figure", {class: "chart-fig"}, h("figcaption", {}, h("strong", {}, title),
           caption ? h("span", {class: "muted"}, ` ${caption}`) : null, log ? h("span", {class: "muted"}, " (log scale)") : null),
           svg);
}

/** Attack success rates, wherever an evaluation put them: {name: rate} or {name: {success_rate}}. */
export function attackRates(report) {
  const found = [];
  const visit = (obj, path) => {
    if (!obj || typeof obj !== "object" || path.length > 4) return;
    for (const [k, v] of Object.entries(obj)) {
      if (/attack/i.test(k) && v && typeof v === "object" && !Array.isArray(v)) {
        for (const [name, rate] of Object.entries(v)) {
          const value = typeof rate === "number" ? rate : rate?.success_rate ?? rate?.asr;
          if (typeof value === "number") found.push({label: name, value});
        }
      } else if (typeof v === "object") visit(v, [...path, k]);
    }
  };
  visit(report, []);
  return found;
}
