// Form fields from the server's own /openapi.json, read at run time: names, types, bounds, defaults and help
// text come from the API (which takes them from ErasureSpec), never copied into the console.

let cached = null;

export async function openapi() {
  if (!cached) {
    cached = fetch("/openapi.json", {headers: {Accept: "application/json"}}).then((r) => {
      if (!r.ok) throw new Error(`/openapi.json answered ${r.status}`);
      return r.json();
    });
    cached.catch(() => { cached = null; });
  }
  return cached;
}

function deref(doc, schema) {
  let s = schema || {};
  while (s.$ref) s = doc.components.schemas[s.$ref.split("/").pop()];
  return s;
}

/** A property schema with `anyOf [X, null]` folded into X (nullable = true). */
function field(doc, name, raw, required) {
  let s = deref(doc, raw);
  let nullable = false;
  if (s.anyOf) {
    const parts = s.anyOf.map((p) => deref(doc, p));
    nullable = parts.some((p) => p.type === "null");
    s = {...(parts.find((p) => p.type !== "null") || {}), ...s, anyOf: undefined};
  }
  const items = s.items ? deref(doc, s.items) : null;
  return {
    name, nullable, required, title: raw.title || s.title || name, description: raw.description || s.description || "",
    type: s.type || (s.enum ? "string" : "string"), enum: s.enum || (s.const !== undefined ? [s.const] : null),
    default: "default" in raw ? raw.default : s.default, items,
    min: s.minimum, max: s.maximum, exclusiveMin: s.exclusiveMinimum, exclusiveMax: s.exclusiveMaximum,
    minLength: s.minLength, maxLength: s.maxLength, minItems: s.minItems, maxItems: s.maxItems,
    multipleOf: s.multipleOf,
    method: raw["x-method"] ?? s["x-method"] ?? null,  // the method whose setting this is (none: common to all)
  };
}

/** Every property of a named component schema, in declaration order. */
export async function fieldsOf(component) {
  const doc = await openapi();
  const s = deref(doc, {$ref: `#/components/schemas/${component}`});
  const req = new Set(s.required || []);
  return Object.entries(s.properties || {}).map(([name, raw]) => field(doc, name, raw, req.has(name)));
}

/** "between 0 (exclusive) and 1000000", "at most 128 items" … from a field's bounds, for help text. */
export function boundsText(f) {
  const lo = f.exclusiveMin !== undefined ? `more than ${f.exclusiveMin}` : f.min !== undefined ? `at least ${f.min}` : "";
  const hi = f.exclusiveMax !== undefined ? `less than ${f.exclusiveMax}` : f.max !== undefined ? `at most ${f.max}` : "";
  const parts = [lo, hi].filter(Boolean);
  if (f.maxItems !== undefined) parts.push(`up to ${f.maxItems} entries`);
  if (f.maxLength !== undefined && f.type === "string") parts.push(`up to ${f.maxLength} characters`);
  if (f.multipleOf !== undefined) parts.push(`a multiple of ${f.multipleOf}`);
  const text = parts.join(", ");
  return text ? `${text[0].toUpperCase()}${text.slice(1)}.` : "";
}

/** Whether the list endpoint takes a given query parameter (e.g. a server-side status filter). */
export async function listParams() {
  const doc = await openapi();
  const op = doc.paths?.["/v1/erasures"]?.get || {};
  return new Set((op.parameters || []).map((p) => p.name));
}
