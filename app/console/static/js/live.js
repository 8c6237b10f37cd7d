// Live job updates. The lifecycle issue's event stream (SSE) has not landed, so this polls
// GET /v1/erasures/{id}. Callers only see watchErasure(id, onView) -> stop(); when the stream exists, replace
// the body with an EventSource on it and keep the contract (onView gets each new view, stops when terminal).

import {api} from "./api.js";

export const ACTIVE = new Set(["queued", "running"]);
const POLL_MS = 1000;

/** Call onView(view) on every change until the job is finished or stop() is called; onError(err) on failure. */
export function watchErasure(id, onView, {onError = () => {}, everyMs = POLL_MS} = {}) {
  let stopped = false;
  let timer = null;
  let last = "";
  const tick = async () => {
    if (stopped) return;
    try {
      const view = await api(`/v1/erasures/${encodeURIComponent(id)}`);
      if (stopped) return;
      const sig = JSON.stringify([view.status, view.progress, view.cancel_requested, view.finished_at]);
      if (sig !== last) { last = sig; onView(view); }
      if (ACTIVE.has(view.status)) timer = setTimeout(tick, everyMs);
    } catch (err) {
      if (stopped) return;
      onError(err);
      if (err.status !== 404 && err.status !== 401) timer = setTimeout(tick, everyMs * 3);
    }
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
