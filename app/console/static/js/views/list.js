// The tenant's erasures: newest first, cursor paging ("Load more"), a status filter, live progress bars.

import {api} from "../api.js";
import {announce, clear, fmtTime, h, progressBar, statusBadge} from "../dom.js";
import {ACTIVE, watchErasure} from "../live.js";
import {listParams} from "../schema.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const PAGE = 20;

/** "a red circle → a circle; … and 997 more" from a view's spec (the first few edits only). */
export function editsText(view, shown = 3) {
  const edits = view.spec?.edits || [];
  const text = edits.slice(0, shown).map((e) => `${e.target} → ${e.anchor || "(empty)"}`).join("; ") || "—";
  return edits.length > shown ? `${text}; … and ${edits.length - shown} more` : text;
}

export function renderList(view, {query}) {
  const watchers = new Map();
  const pageSize = Math.min(100, Math.max(1, Number.parseInt(query.get("limit"), 10) || PAGE));
  let items = [];
  let cursor = null;
  let serverFilter = false;
  let status = STATUSES.includes(query.get("status")) ? query.get("status") : "";

  const filter = h("select", {id: "status-filter", name: "status"},
    h("option", {value: ""}, "All statuses"), STATUSES.map((s) => h("option", {value: s, selected: s === status}, s)));
  const tbody = h("tbody", {});
  const more = h("button", {type: "button", class: "btn", hidden: true}, "Load more");
  const summary = h("p", {class: "muted", id: "list-summary", "aria-live": "polite"}, "Loading…");
  const error = h("p", {class: "field-error", role: "alert"});
  view.append(
    h("div", {class: "page-head"}, h("h1", {}, "Erasures"),
      h("a", {class: "btn primary", href: "/console/erasures/new", "data-link": true}, "New erasure")),
    h("div", {class: "toolbar"}, h("label", {for: "status-filter"}, "Status"), filter),
    error,
    h("table", {class: "jobs", id: "erasures"},
      h("caption", {class: "visually-hidden"}, "Your erasures, newest first"),
      h("thead", {}, h("tr", {}, ["Status", "Progress", "Targets → anchors", "Base model", "Created", "Metadata"]
        .map((t) => h("th", {scope: "col"}, t)))),
      tbody),
    summary, more);

  const shown = () => items.filter((v) => !status || v.status === status);

  function row(v) {
    const bar = progressBar(`Progress of ${editsText(v)}`);
    bar.set(v.progress?.fraction, v.progress?.stage || v.status);
    const meta = v.metadata && typeof v.metadata === "object"
      ? Object.entries(v.metadata).map(([k, val]) => h("span", {class: "chip"}, `${k}: ${val}`)) : "—";
    const cell = (label, ...content) => h("td", {"data-label": label}, h("span", {class: "cell"}, ...content));
    const tr = h("tr", {dataset: {id: v.id, status: v.status}},
      cell("Status", statusBadge(v.status)),
      cell("Progress", bar, h("span", {class: "stage muted"}, v.progress?.stage || "")),
      cell("Targets → anchors",
        h("a", {href: `/console/erasures/${v.id}`, "data-link": true, class: "job-link"}, editsText(v))),
      cell("Base model", v.base_model, h("span", {class: "muted"}, ` · ${v.method}`)),
      cell("Created", h("time", {datetime: v.created_at || ""}, fmtTime(v.created_at))),
      cell("Metadata", meta));
    return tr;
  }

  function draw() {
    clear(tbody);
    const rows = shown();
    for (const v of rows) tbody.append(row(v));
    if (!rows.length) {
      tbody.append(h("tr", {}, h("td", {colspan: 6, class: "empty"},
        items.length ? `No ${status} erasures among the ${items.length} loaded.` : "No erasures yet. ",
        items.length ? null : h("a", {href: "/console/erasures/new", "data-link": true}, "Start one"))));
    }
    summary.textContent = `${rows.length} shown of ${items.length} loaded${cursor ? "; more on the server" : ""}.`;
    more.hidden = !cursor;
  }

  function watch(v) {
    if (!ACTIVE.has(v.status) || watchers.has(v.id)) return;
    watchers.set(v.id, watchErasure(v.id, (fresh) => {
      const i = items.findIndex((x) => x.id === fresh.id);
      if (i >= 0) items[i] = fresh;
      const tr = tbody.querySelector(`tr[data-id="${fresh.id}"]`);
      if (tr && (!status || fresh.status === status)) tr.replaceWith(row(fresh));
      else draw();
      if (!ACTIVE.has(fresh.status)) announce(`Erasure ${editsText(fresh)} ${fresh.status}.`);
    }));
  }

  async function load() {
    more.disabled = true;
    error.textContent = "";
    try {
      // A filtered page may come back short, even empty, with a cursor (the server examines a bounded number
      // of jobs per request): follow it a few times to fill the page before asking the user to load more.
      let got = 0;
      for (let hop = 0; hop < 10; hop++) {
        const params = new URLSearchParams({limit: String(pageSize - got)});
        if (cursor) params.set("cursor", cursor);
        if (serverFilter && status) params.set("status", status);
        const page = await api(`/v1/erasures?${params}`);
        items = items.concat(page.items);
        cursor = page.next_cursor;
        got += page.items.length;
        page.items.forEach(watch);
        if (!cursor || got >= pageSize) break;
      }
      draw();
    } catch (err) {
      error.textContent = err.message;
      summary.textContent = "";
    } finally {
      more.disabled = false;
    }
  }

  filter.addEventListener("change", () => {
    status = filter.value;
    const q = new URLSearchParams(location.search);
    if (status) q.set("status", status); else q.delete("status");
    history.replaceState(null, "", `/console/erasures${q.size ? `?${q}` : ""}`);
    if (serverFilter) {  // the server filters: start the paging again
      for (const stop of watchers.values()) stop();
      watchers.clear();
      items = [];
      cursor = null;
      load();
    } else draw();
  });
  more.addEventListener("click", load);

  listParams().then((p) => { serverFilter = p.has("status"); }).catch(() => {}).finally(load);
  return () => { for (const stop of watchers.values()) stop(); };
}
