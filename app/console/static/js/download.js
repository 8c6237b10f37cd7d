// Downloads that need the Bearer header (so not a plain link): streamed with a progress bar, checked against
// the ETag (the file's sha256) when the browser offers WebCrypto, then handed to the browser as a file.

import {ApiError, rawFetch, sleep} from "./api.js";

async function sha256Hex(blob) {
  if (!globalThis.crypto?.subtle) return null;  // only in secure contexts (https, localhost)
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function filenameOf(res, fallback) {
  const cd = res.headers.get("content-disposition") || "";
  const m = cd.match(/filename\*?=(?:UTF-8'')?"?([^";]+)"?/i);
  return m ? decodeURIComponent(m[1]) : fallback;
}

/**
 * GET path (following a diffusers export's 202 "still exporting" answers), stream it with
 * onProgress({phase, fraction, loaded, total}), save it, and return {name, size, sha256, etag, verified}.
 */
export async function download(path, fallbackName, onProgress, signal) {
  let res;
  for (;;) {
    res = await rawFetch(path, {signal});
    if (res.status !== 202) break;
    const body = await res.json().catch(() => ({}));
    onProgress({phase: `exporting (${body.status || "queued"})`, fraction: null});
    await sleep(1000 * Math.min(5, Number(res.headers.get("retry-after")) || body.retry_after_s || 2), signal);
  }
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  const total = Number(res.headers.get("content-length")) || 0;
  const reader = res.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onProgress({phase: "downloading", fraction: total ? loaded / total : null, loaded, total});
  }
  const blob = new Blob(chunks, {type: res.headers.get("content-type") || "application/octet-stream"});
  const etag = (res.headers.get("etag") || "").replaceAll('"', "") || null;
  onProgress({phase: "checking", fraction: 1, loaded, total});
  const sha256 = await sha256Hex(blob);
  const name = filenameOf(res, fallbackName);
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return {name, size: blob.size, sha256, etag, verified: sha256 && etag ? sha256 === etag : null};
}
