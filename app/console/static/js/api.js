// The REST client: the API key lives in this tab's sessionStorage (never a URL or a cookie) and goes out as
// the Bearer header; every call is same-origin.

const KEY = "erasepro.apiKey";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

/** A failed call: its status and the server's RFC 9457 problem details (``body``; ``errors`` lists the offending
 * fields of a 400/422, each with ``loc`` and ``msg``). */
export class ApiError extends Error {
  constructor(status, body) {
    super(messageOf(status, body));
    this.status = status;
    this.body = body;
    this.errors = Array.isArray(body?.errors) ? body.errors : [];
  }
}

/** What a failed response says, in one sentence. */
function messageOf(status, body) {
  if (status === 401) return "That API key was not accepted. Check it and sign in again.";
  if (body && typeof body.detail === "string") return body.detail;
  return `The server answered ${status}.`;
}

function headers(extra = {}) {
  const out = {...extra};
  if (session.key) out.Authorization = `Bearer ${session.key}`;
  return out;
}

/** fetch() with the key; a 401 signs the tab out (the shell then shows the sign-in page). */
export async function rawFetch(path, {method = "GET", body, accept, signal, key} = {}) {
  const h = headers(accept ? {Accept: accept} : {});
  if (key !== undefined) h.Authorization = `Bearer ${key}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  const res = await fetch(path, {method, headers: h, signal, cache: "no-store",
                                 body: body === undefined ? undefined : JSON.stringify(body)});
  if (res.status === 401 && key === undefined && session.key) {
    session.clear();
    window.dispatchEvent(new CustomEvent("erasepro:signedout", {detail: messageOf(401)}));
  }
  return res;
}

/** JSON in, JSON out; throws ApiError on any status >= 400. */
export async function api(path, opts = {}) {
  const res = await rawFetch(path, {accept: "application/json", ...opts});
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = {detail: text}; }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

/** Check a key without keeping it: true when the API accepts it. */
export async function keyWorks(key) {
  const res = await rawFetch("/v1/base-models", {key, accept: "application/json"});
  if (res.status === 401) return false;
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  return true;
}

export const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(t); reject(signal.reason); }, {once: true});
});
