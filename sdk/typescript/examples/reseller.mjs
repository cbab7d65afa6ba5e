// A reseller's whole flow: list stock, buy a container, wait for the order,
// read the credentials, rebuild, wait, generate a password, and receive and
// verify a webhook. Run it with ADVPS_API_KEY (and ADVPS_BASE_URL unless the
// server is on http://127.0.0.1:8080):
//
//   ADVPS_API_KEY=sk_test_... node examples/reseller.mjs
//
// The webhook receiver listens on 127.0.0.1: the server must allow private
// destinations (`webhook_allow_private = true`) for it to be reached.

import { createServer } from "node:http";
import { Advps, verifyWebhook } from "advps";

const client = new Advps(); // ADVPS_API_KEY, ADVPS_BASE_URL from the environment

// 1. Stock: the first Linux container product in stock, across all pages.
let product;
for await (const row of client.products.stockAll({ type: "linux" })) {
  if (row.stockStatus !== "OUT_OF_STOCK") {
    product = row;
    break;
  }
}
if (!product) throw new Error("nothing in stock");
console.log(`buying ${product.name} (${product.stock} left)`);

// 2. Buy it and wait for the order; the credentials come with the completed order.
const ram = product.packName.match(/^(\d+)\s*GB/i)?.[1] + " GB";
const placed = await client.purchase.linux({ productId: product.id, ram, osId: "debian-12" });
const order = await client.waitForOrder(placed.order.orderId, { timeoutMs: 120_000 });
const [service] = order.services;
console.log(`order ${order.order.orderId} ${order.order.status}: ${service.serviceId} ${service.username}@${service.ip ?? "(no address yet)"}`);

// 3. A webhook endpoint, and a receiver that verifies what it is sent.
let resolveEvent;
const event = new Promise((r) => (resolveEvent = r));
let secret;
const receiver = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", async () => {
    try {
      const payload = await verifyWebhook(secret, req.headers, body);
      res.writeHead(204).end();
      resolveEvent(payload);
    } catch (err) {
      res.writeHead(400).end(String(err.message));
    }
  });
});
await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
const hook = await client.webhooks.create({
  url: `http://127.0.0.1:${receiver.address().port}/advps`,
  events: ["task.completed", "task.failed"],
});
secret = hook.secret;

// 4. Rebuild to another OS and wait for the task (polls cost no quota while unchanged).
const { taskId } = await client.services.rebuild(service.serviceId, { os: "ubuntu-24.04" });
const task = await client.waitForTask(taskId, { timeoutMs: 300_000 });
console.log(`rebuild ${task.status}`);

// 5. A new root password, shown once.
const { password } = await client.services.generatePassword(service.serviceId);
console.log(`new password: ${password.length} characters`);

// 6. The signed event of the rebuild.
let timer;
const received = await Promise.race([event, new Promise((_, no) => (timer = setTimeout(() => no(new Error("no webhook in 60 s")), 60_000)))]);
clearTimeout(timer);
console.log(`webhook verified: ${received.type} for task ${received.data.taskId}`);

await client.webhooks.delete(hook.id);
receiver.close();
receiver.closeAllConnections(); // the server keeps its connection alive for the next delivery
console.log(`quota left: ${client.rateLimit?.remaining}`);
