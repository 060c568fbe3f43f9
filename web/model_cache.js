// Models kept in the browser: the in-browser engine's worker stores every downloaded or
// picked GGUF in Cache Storage (cache "pyllama-models", keyed by its URL; a picked file
// gets a URL of its own under ./__local__/), so the next visit loads it with no network
// and no file pick. The page lists them with their size and deletes them here.
export const MODEL_CACHE = "pyllama-models";

export async function listCachedModels() {
  if (typeof caches === "undefined") return [];
  const cache = await caches.open(MODEL_CACHE);
  const out = [];
  for (const req of await cache.keys()) {
    const resp = await cache.match(req);
    const size = Number(resp?.headers.get("X-Pyllama-Size") || resp?.headers.get("Content-Length") || 0);
    const name = decodeURIComponent(new URL(req.url).pathname.split("/").pop() || req.url);
    out.push({ url: req.url, name, size });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

export async function deleteCachedModel(url) {
  if (typeof caches === "undefined") return false;
  return (await caches.open(MODEL_CACHE)).delete(url);
}
