// @ts-check
// The README journey from TypeScript, with a client generated from the live OpenAPI document:
// erase, wait, download (sha256 checked), generate, cancel, delete. Types: `npm run generate` writes schema.d.ts
// (openapi-typescript); `npm run check` type-checks this file against it; `npm run journey` runs it.
//
//   ERASEPRO_URL=http://127.0.0.1:8000 ERASEPRO_API_KEY=… [ERASEPRO_EXAMPLE_MODEL=bundled] npm run journey
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import createClient from "openapi-fetch";

const baseUrl = process.env.ERASEPRO_URL ?? "http://127.0.0.1:8000";
const apiKey = process.env.ERASEPRO_API_KEY ?? "";

/** @type {import("openapi-fetch").Client<import("./schema.d.ts").paths>} */
const api = createClient({ baseUrl, headers: { Authorization: `Bearer ${apiKey}` } });

/** @param {unknown} cond @param {string} what */
function check(cond, what) {
  if (!cond) throw new Error(`journey: ${what}`);
}

const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll an erasure until it has finished. @param {string} id */
async function wait(id) {
  for (;;) {
    const { data, error } = await api.GET("/v1/erasures/{job_id}", { params: { path: { job_id: id } } });
    check(data, `GET /v1/erasures/${id}: ${error?.detail}`);
    if (data && ["succeeded", "failed", "cancelled"].includes(data.status)) return data;
    await sleep(200);
  }
}

// the model: ERASEPRO_EXAMPLE_MODEL, else the first one installed
const models = await api.GET("/v1/base-models");
check(models.data, `GET /v1/base-models: ${models.error?.detail}`);
// (the document lists the server's registered models as base_model's closed set: a name from the environment is
// cast to it, and the server answers 422 if it is not one)
const model = /** @type {import("./schema.d.ts").components["schemas"]["ErasureRequest"]["base_model"]} */ (
  process.env.ERASEPRO_EXAMPLE_MODEL ?? models.data?.items.find((m) => m.available)?.name ?? "bundled");

// erase
const made = await api.POST("/v1/erasures", {
  body: { base_model: model, edits: [{ target: "a cat", anchor: "a dog" }], metadata: { client: "typescript" } },
});
check(made.response.status === 202 && made.data, `POST /v1/erasures: ${made.error?.detail}`);
const id = /** @type {{id: string}} */ (made.data).id;

// wait
const view = await wait(id);
check(view.status === "succeeded", `the erasure ended ${view.status}: ${view.error}`);

// download (the delta checkpoint) and check its sha256 against the view's artifacts
const ckpt = await api.GET("/v1/erasures/{job_id}/checkpoint", {
  params: { path: { job_id: id }, query: { format: "delta" } }, parseAs: "arrayBuffer",
});
check(ckpt.response.status === 200 && ckpt.data, `checkpoint: ${ckpt.response.status}`);
const bytes = Buffer.from(/** @type {ArrayBuffer} */ (ckpt.data));
const sha = createHash("sha256").update(bytes).digest("hex");
check(sha === view.artifacts?.["delta.safetensors"]?.sha256, "the checkpoint's sha256 matches its view");
writeFileSync("cat.safetensors", bytes);

// generate from the edited model (a PNG; a 202 means it is still running: poll its images)
const gen = await api.POST("/v1/erasures/{job_id}/generate", {
  params: { path: { job_id: id } }, body: { prompt: "a cat", seed: 0, steps: 2, width: 32, height: 32 },
  headers: { Accept: "image/png" }, parseAs: "arrayBuffer",
});
let png = gen.response.status === 200 ? Buffer.from(/** @type {ArrayBuffer} */ (gen.data)) : null;
if (gen.response.status === 202) {
  const generation = gen.response.headers.get("location")?.split("/").pop() ?? "";
  for (let i = 0; i < 600 && !png; i++) {
    await sleep(500);
    const images = await api.GET("/v1/generations/{job_id}/images", {
      params: { path: { job_id: generation } }, headers: { Accept: "image/png" }, parseAs: "arrayBuffer",
    });
    if (images.response.status === 200) png = Buffer.from(/** @type {ArrayBuffer} */ (images.data));
  }
}
check(png && png.subarray(1, 4).toString() === "PNG", `generate: ${gen.response.status}`);
writeFileSync("after.png", /** @type {Buffer} */ (png));

// cancel: a second, larger erasure is stopped with POST …/cancel; DELETE refuses it while it runs
const big = await api.POST("/v1/erasures", {
  body: { base_model: model, edits: Array.from({ length: 400 }, (_, i) => ({ target: `concept ${i}` })) },
});
check(big.data, `POST /v1/erasures: ${big.error?.detail}`);
const bigId = /** @type {{id: string}} */ (big.data).id;
const early = await api.DELETE("/v1/erasures/{job_id}", { params: { path: { job_id: bigId } } });
if (early.response.status === 409) {  // still queued or running: the problem names the way to cancel
  check(early.error?.detail.includes("/cancel"), "a 409 names …/cancel");
  const cancelled = await api.POST("/v1/erasures/{job_id}/cancel", { params: { path: { job_id: bigId } } });
  check(cancelled.response.status === 202 || cancelled.response.status === 409, "cancel answers 202");
  const stopped = await wait(bigId);
  check(stopped.status !== "running" && stopped.status !== "queued", "the cancelled erasure stopped");
  const removed = await api.DELETE("/v1/erasures/{job_id}", { params: { path: { job_id: bigId } } });
  check(removed.response.status === 204, `DELETE after cancel: ${removed.response.status}`);
}

// delete: afterwards the erasure is 404, as problem details
const del = await api.DELETE("/v1/erasures/{job_id}", { params: { path: { job_id: id } } });
check(del.response.status === 204, `DELETE: ${del.response.status}`);
const gone = await api.GET("/v1/erasures/{job_id}", { params: { path: { job_id: id } } });
check(gone.response.status === 404 && gone.error?.status === 404, "a deleted erasure is 404");
check(gone.response.headers.get("content-type") === "application/problem+json", "errors are problem details");

console.log(JSON.stringify({ erasure: id, model, sha256: sha, png_bytes: png?.length, cancelled: bigId }));
