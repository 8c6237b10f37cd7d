// The console shell: a History-API router over /console/… and the sign-in gate.

import {session} from "./api.js";
import {announce, clear, h} from "./dom.js";
import {renderErasure} from "./views/erasure.js";
import {renderList} from "./views/list.js";
import {renderNew} from "./views/new.js";
import {renderSignin} from "./views/signin.js";
import {renderWebhooks} from "./views/webhooks.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
let cleanup = null;

const ROUTES = [
  [/^\/console\/erasures\/new\/?$/, renderNew, "New erasure"],
  [/^\/console\/webhooks\/?$/, renderWebhooks, "Webhooks"],
  [/^\/console\/erasures\/([0-9a-f]{8,64})\/?$/, renderErasure, "Erasure"],
  [/^\/(console\/?(erasures\/?)?)?$/, renderList, "Erasures"],
];

export function navigate(path, {replace = false} = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render();
}

async function render(notice) {
  if (cleanup) { cleanup(); cleanup = null; }
  clear(view);
  const path = location.pathname;
  nav.hidden = !session.key;
  if (!session.key || path.startsWith("/console/signin")) {
    document.title = "Sign in · ErasePro";
    cleanup = renderSignin(view, {notice, onSignedIn: () => navigate(nextAfterSignin(), {replace: true})});
    return;
  }
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === path) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [re, fn, title] of ROUTES) {
    const m = path.match(re);
    if (m) {
      document.title = `${title} · ErasePro`;
      cleanup = fn(view, {params: m.slice(1), navigate, query: new URLSearchParams(location.search)}) || null;
      view.focus({preventScroll: true});
      return;
    }
  }
  document.title = "Not found · ErasePro";
  view.append(h("h1", {}, "Page not found"), h("p", {}, h("a", {href: "/console/erasures", "data-link": true},
                                                          "Back to the erasures")));
}

function nextAfterSignin() {
  return location.pathname.startsWith("/console/signin") || location.pathname === "/"
    ? "/console/erasures" : location.pathname + location.search;
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[data-link]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  ev.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", () => render());
window.addEventListener("erasepro:signedout", (ev) => { announce(ev.detail); render(ev.detail); });
document.getElementById("signout").addEventListener("click", () => {
  session.clear();
  navigate("/console/signin");
  announce("Signed out.");
});

render();
