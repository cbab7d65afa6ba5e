// Web Crypto wherever the client runs: the global one in browsers and
// Node 19+, `node:crypto`'s on Node 18, where it is not global yet.

let cached;

export async function webCrypto() {
  if (cached) return cached;
  if (globalThis.crypto?.subtle) {
    cached = globalThis.crypto;
  } else {
    // Hidden from bundlers: only Node 18 gets here, browsers have the global.
    const mod = await import(/* webpackIgnore: true */ /* @vite-ignore */ "node:crypto");
    cached = mod.webcrypto;
  }
  return cached;
}

/** A random UUID (v4), for idempotency keys. */
export async function randomId() {
  const c = await webCrypto();
  if (typeof c.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function base64ToBytes(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function bytesToBase64(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

export async function hmacSha256(keyBytes, messageBytes) {
  const c = await webCrypto();
  const key = await c.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await c.subtle.sign("HMAC", key, messageBytes));
}
