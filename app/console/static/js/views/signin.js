// Sign in with an API key: checked against the API before it is kept (in this tab's sessionStorage only).

import {keyWorks, session} from "../api.js";
import {h} from "../dom.js";

export function renderSignin(view, {notice, onSignedIn}) {
  const input = h("input", {id: "api-key", name: "api-key", type: "password", autocomplete: "current-password",
                            required: true, spellcheck: "false", "aria-describedby": "key-help key-error"});
  const error = h("p", {id: "key-error", class: "field-error", role: "alert"}, notice || "");
  const submit = h("button", {type: "submit", class: "btn primary"}, "Sign in");
  const form = h("form", {class: "card narrow", novalidate: true},
    h("h1", {}, "Sign in"),
    h("p", {}, "Use an API key of your team (created with ", h("code", {}, "erasepro keys create"),
      "). It is kept in this browser tab only and sent to this server alone."),
    h("label", {for: "api-key"}, "API key"), input,
    h("p", {id: "key-help", class: "help"}, "The key is forgotten when you close the tab or sign out."),
    error, submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) { error.textContent = "Enter your API key."; input.setAttribute("aria-invalid", "true"); input.focus(); return; }
    submit.disabled = true;
    error.textContent = "";
    try {
      if (await keyWorks(key)) {
        session.set(key);
        onSignedIn();
        return;
      }
      error.textContent = "That API key was not accepted. Check it and try again.";
      input.setAttribute("aria-invalid", "true");
      input.select();
    } catch (err) {
      error.textContent = `Could not reach the server: ${err.message}`;
    } finally {
      submit.disabled = false;
    }
  });
  view.append(form);
  input.focus();
}
