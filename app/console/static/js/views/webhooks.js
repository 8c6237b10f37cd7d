// The tenant's webhook endpoints: list, create (the secret is shown once), enable/disable, rotate the secret
// (with a grace period for the old one) and delete. A secret lives only in this page's DOM: never in the URL,
// storage or the console log, and it is gone as soon as the user navigates away (the view is cleared).

import {api} from "../api.js";
import {announce, clear, confirmDialog, fmtTime, h} from "../dom.js";
import {fieldsOf} from "../schema.js";

const PAGE = 100;  // the API's largest page; "Load more" follows next_cursor beyond it
const GRACES = [[86400, "1 day (default)"], [3600, "1 hour"], [0, "none: revoke it now"]];

/** The event types the API accepts in an endpoint's filter, from /openapi.json (WebhookEndpointCreate.events). */
async function eventTypes() {
  const events = (await fieldsOf("WebhookEndpointCreate")).find((f) => f.name === "events");
  return events?.items?.enum || [];
}

export function renderWebhooks(view) {
  let items = [];
  let cursor = null;
  const secretBox = h("section", {class: "card secret", id: "secret-box", "aria-labelledby": "secret-title", hidden: true});
  const url = h("input", {id: "wh-url", name: "url", type: "text", inputmode: "url", required: true, spellcheck: "false",
                          placeholder: "https://hooks.example.com/erasepro", "aria-describedby": "wh-url-help wh-error"});
  const description = h("input", {id: "wh-description", name: "description", type: "text", maxlength: 500});
  const eventsBox = h("div", {class: "event-choices", id: "wh-events"}, h("span", {class: "muted"}, "Loading…"));
  const error = h("p", {id: "wh-error", class: "field-error", role: "alert"});
  const submit = h("button", {type: "submit", class: "btn primary"}, "Add endpoint");
  const form = h("form", {class: "card", id: "new-endpoint", novalidate: true, "aria-labelledby": "new-ep-title"},
    h("h2", {id: "new-ep-title"}, "Add an endpoint"),
    h("div", {class: "field"}, h("label", {for: "wh-url"}, "URL"), url,
      h("p", {id: "wh-url-help", class: "help"},
        "An http(s) URL that receives the events of all your erasures, signed with the endpoint's secret.")),
    h("fieldset", {}, h("legend", {}, "Events"),
      h("p", {class: "help"}, "None ticked: every event."), eventsBox),
    h("div", {class: "field"}, h("label", {for: "wh-description"}, "Description (optional)"), description),
    error, submit);
  const tbody = h("tbody", {});
  const listError = h("p", {class: "field-error", role: "alert", id: "endpoints-error"});
  const more = h("button", {type: "button", class: "btn", hidden: true}, "Load more");
  view.append(h("div", {class: "page-head"}, h("h1", {}, "Webhooks")),
    h("p", {class: "muted"}, "Endpoints receive the events of every erasure of your team. A job's own ",
      h("code", {}, "webhook"), " is separate."),
    secretBox, form, listError,
    h("table", {class: "jobs endpoints", id: "endpoints"},
      h("caption", {class: "visually-hidden"}, "Your webhook endpoints, newest first"),
      h("thead", {}, h("tr", {}, ["URL", "Events", "Enabled", "Description", "Created", "Actions"]
        .map((t) => h("th", {scope: "col"}, t)))),
      tbody),
    more);

  eventTypes().then((types) => {
    clear(eventsBox).append(...types.map((t) => h("label", {class: "check"},
      h("input", {type: "checkbox", name: "events", value: t}), ` ${t}`)));
  }).catch((err) => { clear(eventsBox).append(h("span", {class: "field-error"}, err.message)); });

  /** Show a secret once, with a copy button; replaced by the next one, dropped with the view. */
  function showSecret(ep, verb) {
    const code = h("code", {id: "new-secret"}, ep.secret);
    const note = h("span", {class: "muted", "aria-live": "polite"});
    const copy = h("button", {type: "button", class: "btn small", id: "copy-secret", onclick: async () => {
      try {
        await navigator.clipboard.writeText(ep.secret);
        note.textContent = "Copied.";
      } catch {
        // No clipboard (an insecure context or a denied permission): select it for a manual copy instead.
        getSelection().selectAllChildren(code);
        note.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
      }
    }}, "Copy");
    clear(secretBox).append(h("h2", {id: "secret-title"}, `Secret of the endpoint ${verb}`),
      h("p", {}, h("strong", {}, "Copy it now: you will not see it again. "),
        `It signs deliveries to ${ep.url}; keep it with your receiver.`),
      h("p", {class: "secret-line"}, code, " ", copy, " ", note),
      h("button", {type: "button", class: "btn small", onclick: () => { clear(secretBox); secretBox.hidden = true; }},
        "Done, hide it"));
    secretBox.hidden = false;
    secretBox.scrollIntoView({block: "nearest"});
  }

  function row(ep) {
    const cell = (label, ...content) => h("td", {"data-label": label}, h("span", {class: "cell"}, ...content));
    const rowError = h("span", {class: "field-error", role: "alert"});
    const toggle = h("button", {type: "button", class: "btn small", dataset: {action: "toggle"}, onclick: async () => {
      toggle.disabled = true;
      rowError.textContent = "";
      try {
        replace(await api(`/v1/webhook-endpoints/${ep.id}`, {method: "PATCH", body: {enabled: !ep.enabled}}));
        announce(`Endpoint ${ep.enabled ? "disabled" : "enabled"}.`);
      } catch (err) { rowError.textContent = err.message; toggle.disabled = false; }
    }}, ep.enabled ? "Disable" : "Enable");
    const rotate = h("button", {type: "button", class: "btn small", dataset: {action: "rotate"}, onclick: async () => {
      const grace = await rotateDialog(ep);
      if (grace === null) return;
      rowError.textContent = "";
      try {
        const got = await api(`/v1/webhook-endpoints/${ep.id}/rotate-secret`, {method: "POST", body: {grace_s: grace}});
        const {secret, ...shown} = got;  // the secret goes to the secret box only, not into the list's state
        replace(shown);
        showSecret({...shown, secret}, "rotated");
        announce("New secret shown once.");
      } catch (err) { rowError.textContent = err.message; }
    }}, "Rotate secret");
    const del = h("button", {type: "button", class: "btn small danger", dataset: {action: "delete"}, onclick: async () => {
      if (!await confirmDialog("Delete this endpoint?",
                               `${ep.url} stops receiving events; deliveries still queued for it are dropped.`,
                               "Delete")) return;
      rowError.textContent = "";
      try {
        await api(`/v1/webhook-endpoints/${ep.id}`, {method: "DELETE"});
        items = items.filter((x) => x.id !== ep.id);
        draw();
        announce("Endpoint deleted.");
      } catch (err) { rowError.textContent = err.message; }
    }}, "Delete");
    const grace = ep.previous_secret_expires_at
      ? h("span", {class: "muted"}, ` · old secret valid until ${fmtTime(ep.previous_secret_expires_at)}`) : null;
    return h("tr", {dataset: {id: ep.id, enabled: String(ep.enabled)}},
      cell("URL", h("code", {class: "ep-url"}, ep.url), grace),
      cell("Events", ep.events?.length ? ep.events.map((e) => h("span", {class: "chip"}, e)) : "all"),
      cell("Enabled", h("span", {class: `badge ${ep.enabled ? "s-succeeded" : "s-cancelled"}`},
                        ep.enabled ? "enabled" : "disabled")),
      cell("Description", ep.description || "—"),
      cell("Created", h("time", {datetime: ep.created_at || ""}, fmtTime(ep.created_at))),
      cell("Actions", toggle, rotate, del, rowError));
  }

  function replace(ep) {
    items = items.map((x) => (x.id === ep.id ? ep : x));
    const tr = tbody.querySelector(`tr[data-id="${ep.id}"]`);
    if (tr) tr.replaceWith(row(ep)); else draw();
  }

  function draw() {
    clear(tbody);
    for (const ep of items) tbody.append(row(ep));
    if (!items.length) tbody.append(h("tr", {}, h("td", {colspan: 6, class: "empty"}, "No endpoints yet.")));
    more.hidden = !cursor;
  }

  async function load() {
    more.disabled = true;
    listError.textContent = "";
    try {
      const params = new URLSearchParams({limit: String(PAGE)});
      if (cursor) params.set("cursor", cursor);
      const page = await api(`/v1/webhook-endpoints?${params}`);
      items = items.concat(page.items);
      cursor = page.next_cursor;
      draw();
    } catch (err) {
      listError.textContent = err.message;
    } finally {
      more.disabled = false;
    }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    url.removeAttribute("aria-invalid");
    if (!url.value.trim()) {
      error.textContent = "Enter the URL that should receive the events.";
      url.setAttribute("aria-invalid", "true");
      url.focus();
      return;
    }
    const events = [...eventsBox.querySelectorAll("input:checked")].map((c) => c.value);
    const body = {url: url.value.trim(), description: description.value};
    if (events.length) body.events = events;
    submit.disabled = true;
    try {
      const got = await api("/v1/webhook-endpoints", {method: "POST", body});
      const {secret, ...shown} = got;
      items = [shown, ...items];
      draw();
      form.reset();
      showSecret({...shown, secret}, "created");
      announce("Endpoint added; its secret is shown once.");
    } catch (err) {
      // 422 (a refused URL, e.g. a private address) and 409 (the endpoint limit) carry the API's own sentence.
      error.textContent = apiMessage(err);
      if (err.status === 422) url.setAttribute("aria-invalid", "true");
    } finally {
      submit.disabled = false;
    }
  });
  more.addEventListener("click", load);
  load();
  return () => { clear(secretBox); };
}

/** The API's message: a 422's first error ("url: …" without the "body." prefix), else the ApiError's text. */
function apiMessage(err) {
  if (err.errors?.length) {
    return err.errors.map((d) => {
      const where = (d.loc || []).filter((p) => p !== "body").join(".");
      return where ? `${where}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  return err.message;
}

/** Ask how long the current secret keeps verifying; resolves the grace in seconds, or null when declined. */
function rotateDialog(ep) {
  return new Promise((resolve) => {
    const select = h("select", {id: "grace"}, GRACES.map(([s, label]) => h("option", {value: s}, label)));
    const dlg = h("dialog", {class: "confirm", "aria-labelledby": "rot-title"},
      h("h2", {id: "rot-title"}, "Rotate this endpoint's secret?"),
      h("p", {}, `A new secret signs deliveries to ${ep.url}; it is shown once.`),
      h("label", {for: "grace"}, "The current secret keeps verifying for"), select,
      h("div", {class: "actions"},
        h("button", {type: "button", class: "btn", onclick: () => dlg.close("cancel")}, "Keep it"),
        h("button", {type: "button", class: "btn danger", onclick: () => dlg.close("ok")}, "Rotate")));
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(dlg.returnValue === "ok" ? Number(select.value) : null);
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}
