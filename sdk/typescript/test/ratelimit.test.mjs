// 429 against a server whose quota is lowered to three requests a two-second
// window: the client waits `Retry-After` and retries (bounded), or, switched
// off, throws with the rate-limit state; POSTs are retried only under an
// Idempotency-Key.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { Advps, AdvpsError } from "../src/index.js";
import { startServer } from "./server.mjs";

describe("rate limits", () => {
  let server;
  const seen = [];
  const fetchRecording = async (url, init) => {
    const response = await fetch(url, init);
    seen.push({ status: response.status, retryAfter: response.headers.get("retry-after"), at: Date.now() });
    return response;
  };

  before(async () => {
    server = await startServer({ ADVPS_RATE_LIMIT_TEST: "3", ADVPS_RATE_LIMIT_WINDOW_SECS: "2" });
  });
  after(async () => server?.stop());

  const make = (options = {}) => new Advps({ apiKey: server.apiKey, baseUrl: server.baseUrl, fetch: fetchRecording, ...options });

  async function exhaust(client) {
    // A fresh window, then its three requests.
    await new Promise((r) => setTimeout(r, 2100));
    for (let i = 0; i < 3; i++) await client.os.list({}, { retryOnRateLimit: false });
  }

  test("switched off: a 429 throws with Retry-After and the rate-limit state", async () => {
    const client = make({ retryOnRateLimit: false });
    await exhaust(client);
    await assert.rejects(client.os.list(), (err) => {
      assert.ok(err instanceof AdvpsError);
      assert.equal(err.status, 429);
      assert.equal(err.message, "Too many requests: rate limit exceeded");
      assert.ok(err.retryAfter >= 1 && err.retryAfter <= 2, `Retry-After ${err.retryAfter}`);
      assert.equal(err.rateLimit.remaining, 0);
      assert.equal(err.rateLimit.limit, 3);
      return true;
    });
    assert.equal(client.rateLimit.remaining, 0);
  });

  test("on: the client waits Retry-After and the retry succeeds", async () => {
    const client = make();
    await exhaust(client);
    seen.length = 0;
    const started = Date.now();
    const os = await client.os.list();
    assert.ok(os.os.length > 0);
    const limited = seen.find((s) => s.status === 429);
    assert.ok(limited, "a 429 was answered first");
    const waited = seen.at(-1).at - limited.at;
    assert.ok(waited >= Number(limited.retryAfter) * 1000 - 50, `waited ${waited} ms for Retry-After ${limited.retryAfter}`);
    assert.equal(seen.at(-1).status, 200);
    assert.ok(Date.now() - started < 10_000);
  });

  test("bounded: after maxRetries the 429 is thrown", async () => {
    const client = make({ maxRetries: 0 });
    await exhaust(client);
    await assert.rejects(client.os.list(), (err) => err.status === 429);
  });

  test("a POST is retried under its Idempotency-Key, and not without one", async () => {
    const keys = [];
    const client = make({
      fetch: async (url, init) => {
        if (init.method === "POST") keys.push(init.headers["idempotency-key"]);
        return fetchRecording(url, init);
      },
    });
    await exhaust(client);
    const rebooted = await client.services.reboot("vps_service_1", { mode: "force" });
    assert.equal(rebooted.serviceId, "vps_service_1");
    assert.ok(keys.length >= 2 && keys.every((k) => k && k === keys[0]), JSON.stringify(keys));

    const plain = make({ idempotency: false });
    await exhaust(plain);
    await assert.rejects(plain.services.reboot("vps_service_1", { mode: "force" }), (err) => err.status === 429);
  });
});
