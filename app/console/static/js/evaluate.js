// Starting an evaluation of an erasure from a console section and following it to its end (judged.js, threat.js).
import {api, sleep} from "./api.js";
import {announce, clear} from "./dom.js";

const ENDED = ["succeeded", "failed", "cancelled"];

/** Clicking `run` POSTs `body` to the erasure's evaluations, polls the job into `status` until it ends (or
 *  `controller` aborts: the view was left), then calls `reload`. The button is disabled meanwhile. */
export function bindEvaluationButton(run, status, controller, erasureId, body, reload) {
  run.addEventListener("click", async () => {
    run.disabled = true;
    clear(status).append("Evaluation queued…");
    try {
      const ev = await api(`/v1/erasures/${erasureId}/evaluations`, {method: "POST", body});
      for (;;) {
        await sleep(1500, controller.signal);
        const cur = await api(ev.links.self);
        status.textContent = `Evaluation ${cur.status}${cur.progress?.stage ? `: ${cur.progress.stage}` : ""}…`;
        if (ENDED.includes(cur.status)) {
          status.textContent = cur.status === "succeeded" ? "Evaluation done." : `Evaluation ${cur.status}: ${cur.error || ""}`;
          announce(status.textContent);
          break;
        }
      }
      await reload();
    } catch (err) {
      // a refusal is RFC 9457 problem details: its first field error says what to change
      if (!controller.signal.aborted) status.textContent = err.errors?.[0]?.msg || err.message;
    } finally {
      run.disabled = false;
    }
  });
}
