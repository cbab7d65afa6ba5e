// Standard Webhooks verification of the deliveries advps sends: the
// `webhook-signature` header carries `v1,<base64 HMAC-SHA256>` of
// `{webhook-id}.{webhook-timestamp}.{body}` under the endpoint's `whsec_`
// secret, one signature per secret in force (two after a rotation, until
// the old secret expires), and the timestamp must be recent.

import { base64ToBytes, bytesToBase64, hmacSha256 } from "./crypto.js";

export class WebhookVerificationError extends Error {
  constructor(message) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

function header(headers, name) {
  if (typeof headers?.get === "function") return headers.get(name) ?? undefined;
  for (const [k, v] of Object.entries(headers ?? {})) {
    if (k.toLowerCase() === name) return Array.isArray(v) ? v.join(" ") : v;
  }
  return undefined;
}

function secretBytes(secret) {
  const raw = secret.startsWith("whsec_") ? secret.slice("whsec_".length) : secret;
  try {
    return base64ToBytes(raw);
  } catch {
    throw new WebhookVerificationError("The secret is not a whsec_ base64 secret");
  }
}

function sameText(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * Checks a delivery and returns its parsed JSON payload; throws
 * WebhookVerificationError if it is not authentic or too old.
 *
 * @param {string | string[]} secret one secret, or several (old and new during a rotation)
 * @param {Headers | Record<string, string | string[] | undefined>} headers the request's headers
 * @param {string | Uint8Array} body the raw body, exactly as received
 * @param {{ toleranceSeconds?: number, now?: Date }} [options]
 */
export async function verifyWebhook(secret, headers, body, options = {}) {
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (!id || !timestamp || !signatures) throw new WebhookVerificationError("Missing webhook-id, webhook-timestamp or webhook-signature");
  if (!/^\d+$/.test(timestamp)) throw new WebhookVerificationError("Invalid webhook-timestamp");
  const tolerance = options.toleranceSeconds ?? 300;
  const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const ts = Number(timestamp);
  if (ts < now - tolerance) throw new WebhookVerificationError("Timestamp too old");
  if (ts > now + tolerance) throw new WebhookVerificationError("Timestamp too new");
  const bodyText = typeof body === "string" ? body : new TextDecoder().decode(body);
  const message = new TextEncoder().encode(`${id}.${timestamp}.${bodyText}`);
  const offered = signatures
    .split(" ")
    .map((s) => s.trim())
    .filter((s) => s.startsWith("v1,"))
    .map((s) => s.slice(3));
  for (const s of Array.isArray(secret) ? secret : [secret]) {
    const expected = bytesToBase64(await hmacSha256(secretBytes(s), message));
    if (offered.some((o) => sameText(o, expected))) {
      try {
        return JSON.parse(bodyText);
      } catch {
        throw new WebhookVerificationError("The body is not JSON");
      }
    }
  }
  throw new WebhookVerificationError("No matching signature");
}
