// verifyWebhook against deliveries the server really sent to a local
// receiver (private destinations allowed for the test), before and during
// a secret rotation, and against tampered, stale and foreign messages.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { Advps, verifyWebhook, WebhookVerificationError } from "../src/index.js";
import { startReceiver, startServer } from "./server.mjs";

describe("webhook verification", () => {
  let server;
  let receiver;
  let client;

  before(async () => {
    server = await startServer();
    receiver = await startReceiver();
    client = new Advps({ apiKey: server.apiKey, baseUrl: server.baseUrl });
  });
  after(async () => {
    await receiver?.close();
    await server?.stop();
  });

  async function rebuildAndReceive() {
    const { taskId } = await client.services.rebuild("vps_service_1", { os: "debian-12" });
    await client.waitForTask(taskId, { timeoutMs: 60_000 });
    return receiver.next((d) => JSON.parse(d.body).data?.taskId === taskId);
  }

  test("a real delivery verifies; tampered, stale or foreign ones do not", async () => {
    const hook = await client.webhooks.create({ url: receiver.url, events: ["task.completed"] });
    const delivery = await rebuildAndReceive();
    const event = await verifyWebhook(hook.secret, delivery.headers, delivery.body);
    assert.equal(event.type, "task.completed");
    assert.equal(delivery.headers["webhook-signature"].split(" ").length, 1);

    await assert.rejects(verifyWebhook(hook.secret, delivery.headers, delivery.body.replace("COMPLETED", "FAILED")), WebhookVerificationError);
    await assert.rejects(
      verifyWebhook(hook.secret, delivery.headers, delivery.body, { now: new Date(Date.now() + 10 * 60_000) }),
      /too old/,
    );
    await assert.rejects(
      verifyWebhook("whsec_" + Buffer.alloc(32, 7).toString("base64"), delivery.headers, delivery.body),
      /No matching signature/,
    );
    const noId = { ...delivery.headers };
    delete noId["webhook-id"];
    await assert.rejects(verifyWebhook(hook.secret, noId, delivery.body), /Missing/);
    // Headers objects and byte bodies are taken too.
    const asHeaders = new Headers(delivery.headers);
    assert.equal((await verifyWebhook(hook.secret, asHeaders, new TextEncoder().encode(delivery.body))).type, "task.completed");

    const log = await client.webhooks.deliveries(hook.id);
    const sent = log.deliveries.find((d) => d.id === delivery.headers["webhook-id"]);
    assert.ok(sent, "the delivery is in the endpoint's log");
    const again = await client.webhooks.redeliver(hook.id, sent.id);
    assert.ok(again);
    await client.webhooks.delete(hook.id);
  });

  test("during a rotation both secrets verify", async () => {
    const hook = await client.webhooks.create({ url: receiver.url, events: ["task.completed"] });
    const rotated = await client.webhooks.rotateSecret(hook.id);
    assert.ok(rotated.previousSecretValidUntil);
    const delivery = await rebuildAndReceive();
    assert.equal(delivery.headers["webhook-signature"].split(" ").length, 2, "signed with both secrets");
    assert.equal((await verifyWebhook(hook.secret, delivery.headers, delivery.body)).type, "task.completed");
    assert.equal((await verifyWebhook(rotated.secret, delivery.headers, delivery.body)).type, "task.completed");
    assert.equal((await verifyWebhook([rotated.secret, hook.secret], delivery.headers, delivery.body)).type, "task.completed");
    await client.webhooks.delete(hook.id);
  });
});
