// Every operation of the client against the real server: data typed and
// unwrapped, errors as AdvpsError, ETag polls free of quota, waitForTask and
// waitForOrder, page iterators, and an idempotent retry that charges once.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { Advps, AdvpsError, AdvpsOperationFailedError, OPERATIONS } from "../src/index.js";
import { startServer } from "./server.mjs";

describe("the client against a fresh advps", () => {
  let server;
  let client;
  const called = new Set();
  const statuses = [];

  before(async () => {
    server = await startServer();
    const fetchRecording = async (url, init) => {
      const response = await fetch(url, init);
      statuses.push({ url: String(url), method: init.method, status: response.status, headers: init.headers });
      return response;
    };
    client = new Advps({ apiKey: server.apiKey, baseUrl: server.baseUrl, fetch: fetchRecording });
    const send = client.send.bind(client);
    client.send = (spec, options) => {
      called.add(spec.operationId);
      return send(spec, options);
    };
  });
  after(async () => server?.stop());

  test("me, livez and health; the rate-limit state is kept", async () => {
    const me = await client.me();
    assert.equal(me.account, "demo");
    assert.equal(me.keyPrefix, "sk_test_");
    assert.equal(me.rateLimit.limit, 1000);
    assert.equal(me.mode, "test");
    assert.match(me.requestId, /^req_/);
    assert.equal(client.rateLimit.limit, 1000);
    assert.equal(client.lastRequestId, me.requestId);
    assert.equal((await client.livez()).status, "ok");
    assert.equal((await client.health()).status, "ok");
  });

  test("stock, one product's stock, the OS list", async () => {
    const page = await client.products.stock({ limit: 100 });
    assert.ok(page.stock.length > 3, "the sandbox has more than three products");
    assert.equal(page.pagination.page, 1);
    const linux = await client.products.stock({ type: "linux", limit: 100 });
    assert.ok(linux.stock.length > 0);
    assert.ok(linux.stock.every((row) => row.vmType === "LXC"));
    const one = await client.products.getStock(page.stock[0].id);
    assert.equal(one.stock.id, page.stock[0].id);
    const os = await client.os.list({ type: "lxc" });
    assert.ok(os.os.some((o) => o.slug === "debian-12"));
  });

  test("pagination: the iterators walk every page in order", async () => {
    const all = (await client.products.stock({ limit: 100 })).stock.map((r) => r.id);
    const walked = [];
    for await (const row of client.products.stockAll({ limit: 3 })) walked.push(row.id);
    assert.deepEqual(walked, all);
    const pages = statuses.filter((s) => s.url.includes("/products/stock?") && s.url.includes("limit=3"));
    assert.equal(pages.length, Math.ceil(all.length / 3), "one request per page");
  });

  test("a 304 poll costs no quota (checked through me())", async () => {
    const r0 = (await client.me()).rateLimit.remaining;
    const first = await client.services.status("vps_service_1");
    const r1 = (await client.me()).rateLimit.remaining;
    const second = await client.services.status("vps_service_1");
    const r2 = (await client.me()).rateLimit.remaining;
    assert.equal(r0 - r1, 1, "the first read costs one request");
    assert.equal(r1, r2, "the 304 costs nothing");
    assert.deepEqual(second, first, "the 304 answers with the data of the tag");
    const polls = statuses.filter((s) => s.url.endsWith("/services/vps_service_1/status"));
    assert.equal(polls.at(-1).status, 304);
    assert.ok(polls.at(-1).headers["if-none-match"]);
  });

  test("power, IP, MAC and password operations", async () => {
    const started = await client.services.start("vps_service_2");
    assert.equal(started.serviceId, "vps_service_2");
    const stopped = await client.services.stop("vps_service_2", { mode: "force" });
    assert.equal(stopped.powerMode, "forced");
    const rebooted = await client.services.reboot("vps_service_1");
    assert.equal(rebooted.serviceId, "vps_service_1");
    const ip = await client.services.configureIp("vps_service_1");
    assert.equal(ip.status, "IP_CONFIGURED");
    const mac = await client.services.resetMac("vps_service_1");
    assert.match(mac.mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    const password = await client.services.generatePassword("vps_service_1");
    assert.ok(password.password.length >= 12);
  });

  test("errors carry status, message, errors, request id and rate-limit state", async () => {
    await assert.rejects(client.services.start("no_such_service"), (err) => {
      assert.ok(err instanceof AdvpsError);
      assert.equal(err.status, 404);
      assert.equal(err.message, "Service not found or not accessible");
      assert.match(err.requestId, /^req_/);
      assert.equal(err.rateLimit.limit, 1000);
      return true;
    });
    await assert.rejects(client.products.stock({ type: "windows" }), (err) => err.status === 400 && /Invalid type/.test(err.message));
  });

  test("waitForTask on a rebuild that completes", async () => {
    const rebuild = await client.services.rebuild("vps_service_1", { os: "debian-12" });
    assert.equal(rebuild.status, "PENDING");
    const task = await client.tasks.status(rebuild.taskId);
    assert.equal(task.taskId, rebuild.taskId);
    const done = await client.waitForTask(rebuild.taskId, { timeoutMs: 60_000 });
    assert.equal(done.status, "COMPLETED");
    assert.equal(done.progress, 100);
  });

  test("waitForTask on sandbox-fail throws with the failed task", async () => {
    const rebuild = await client.services.rebuild("lxc_service_1", { os: "sandbox-fail" });
    await assert.rejects(client.waitForTask(rebuild.taskId, { timeoutMs: 60_000 }), (err) => {
      assert.ok(err instanceof AdvpsOperationFailedError);
      assert.equal(err.result.status, "FAILED");
      assert.ok(err.result.error);
      return true;
    });
  });

  test("waitForTask honours an abort signal", async () => {
    const rebuild = await client.services.rebuild("vps_service_1", { os: "ubuntu-24.04" });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    await assert.rejects(client.waitForTask(rebuild.taskId, { signal: controller.signal }), AdvpsError);
    await client.waitForTask(rebuild.taskId, { timeoutMs: 60_000 });
  });

  test("purchase, waitForOrder, the credentials, the order and a renewal", async () => {
    // Three days: inside the renewal window at once.
    const placed = await client.purchase.linux({ productId: "prod_abc123", ram: "4 GB", osId: "debian-12", validity: 3 });
    assert.equal(placed.order.status, "PENDING");
    const done = await client.waitForOrder(placed.order.orderId, { timeoutMs: 60_000 });
    assert.equal(done.order.status, "COMPLETED");
    const [service] = done.services;
    assert.ok(service.password, "the password once the order is COMPLETED");
    assert.equal(service.username, "root");
    const again = await client.orders.get(placed.order.orderId);
    assert.equal(again.order.orderId, placed.order.orderId);
    const renewed = await client.services.renew({ orderId: placed.order.orderId, serviceIds: [service.serviceId] });
    assert.equal(renewed.orderId, placed.order.orderId);
    const vps = await client.purchase.vps({ productId: "prod_stu901", ram: "1 GB", name: "web-1", email: "ops@example.com" });
    assert.equal(vps.order.productId, "prod_stu901");
  });

  test("an idempotent retry after a lost answer charges once", async () => {
    const before = (await client.products.getStock("prod_def456", { conditional: false })).stock.stock;
    const sent = [];
    let lost = false;
    const lossy = new Advps({
      apiKey: server.apiKey,
      baseUrl: server.baseUrl,
      fetch: async (url, init) => {
        const response = await fetch(url, init);
        if (init.method === "POST") {
          sent.push(init.headers["idempotency-key"]);
          if (!lost) {
            // The server did the work; the answer is lost on the way back.
            lost = true;
            await response.text();
            throw new TypeError("fetch failed: connection reset");
          }
        }
        return response;
      },
    });
    const placed = await lossy.purchase.linux({ productId: "prod_def456", ram: "2 GB" });
    assert.equal(sent.length, 2, "sent twice");
    assert.ok(sent[0] && sent[0] === sent[1], "under one Idempotency-Key");
    const after = (await client.products.getStock("prod_def456", { conditional: false })).stock.stock;
    assert.equal(before - after, 1, "one unit of stock taken, not two");
    const audit = await client.audit.list({ limit: 100 });
    const orders = new Set(audit.entries.filter((e) => e.idempotencyKey === sent[0]).map((e) => e.requestId));
    assert.ok(orders.size >= 1);
    assert.ok(placed.order.orderId);
    // Without idempotency, a lost answer is not retried.
    const once = new Advps({
      apiKey: server.apiKey,
      baseUrl: server.baseUrl,
      idempotency: false,
      fetch: async () => {
        throw new TypeError("fetch failed");
      },
    });
    await assert.rejects(once.services.start("vps_service_1"), (err) => err instanceof AdvpsError && err.status === 0);
  });

  test("webhook endpoints: create, list, get, deliveries, rotate, redeliver, delete", async () => {
    const created = await client.webhooks.create({ url: "http://127.0.0.1:9/none", events: ["order.completed"] });
    assert.match(created.secret, /^whsec_/);
    const list = await client.webhooks.list();
    assert.ok(list.webhooks.some((w) => w.id === created.id));
    assert.equal((await client.webhooks.get(created.id)).id, created.id);
    const deliveries = await client.webhooks.deliveries(created.id, { limit: 10 });
    assert.deepEqual(deliveries.deliveries, []);
    const rotated = await client.webhooks.rotateSecret(created.id);
    assert.notEqual(rotated.secret, created.secret);
    await assert.rejects(client.webhooks.redeliver(created.id, "msg_nope"), (err) => err.status === 404);
    const deleted = await client.webhooks.delete(created.id);
    assert.ok(deleted);
  });

  test("audit: pages of the log, walked by the iterator", async () => {
    const page = await client.audit.list({ limit: 100 });
    assert.ok(page.entries.length > 4);
    const walked = [];
    for await (const e of client.audit.listAll({ limit: 2 })) walked.push(e.id);
    assert.deepEqual(walked.slice(0, page.entries.length), page.entries.map((e) => e.id));
    const one = await client.audit.list({ serviceId: "vps_service_1", limit: 100 });
    assert.ok(one.entries.every((e) => e.serviceId === "vps_service_1"));
  });

  test("every operation of the document was called", async () => {
    // Operations added to the server after these tests were written are
    // called generically (sandbox ids for path parameters) and must answer
    // without a server error, so that a regenerated client stays exercised.
    const ids = { serviceId: "vps_service_1", taskId: "none", orderId: "none", id: "prod_abc123", webhookId: "none", deliveryId: "none" };
    for (const op of OPERATIONS.filter((o) => !called.has(o.operationId))) {
      const path = op.path.replace(/{([^}]+)}/g, (_, name) => encodeURIComponent(ids[name] ?? "none"));
      try {
        await client.send({ operationId: op.operationId, method: op.method, path, body: op.method === "POST" ? {} : undefined });
      } catch (err) {
        assert.ok(err instanceof AdvpsError && err.status >= 400 && err.status < 500, `${op.name}: ${err.status} ${err.message}`);
      }
      called.add(op.operationId);
    }
    assert.deepEqual(OPERATIONS.filter((o) => !called.has(o.operationId)), []);
  });
});
