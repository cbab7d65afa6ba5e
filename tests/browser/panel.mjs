// Drives the customer panel (/panel) of a fresh `advps serve` in headless
// Chromium: sign in with the printed test key, stop and start vps_service_1
// and see its state change, rebuild it in the sandbox and watch the bar
// reach 100 %, reset its MAC address (a second reset the same day is
// refused), find those calls in the audit log, all of it and the service's
// alone, page by page; open the charts, generate a password, create and
// revoke a key and see the key's quota as /me reports it, open the (simulated) console and run `echo` through the terminal;
// buy a container and follow the order to its password, see the wallet's
// balance and ledger and the orders list account for it, buy a VPS whose
// first answer is lost and see it bought once, and see a webhook to a
// loopback address refused. A second server, which lets webhooks reach
// loopback, refuses a RAM size it does not sell (the page then offers the
// sizes it does), pages the ledger and the orders list after ten more
// purchases, and gets an endpoint aimed at a local receiver: a power
// change is delivered there, redelivered, the secret rotated, the endpoint
// deleted.
// The page must load nothing from elsewhere and break no rule of its
// Content-Security-Policy; a form posted from another origin must be
// refused. Screenshots of each page go to target/panel-*.png (also at
// 375 px wide).
//
//   node panel.mjs
//
// ADVPS_BIN (default target/debug/advps) and CHROMIUM (default
// /usr/bin/chromium) can point elsewhere.

import { createServer } from "node:http";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = process.env.ADVPS_BIN || join(root, "target", "debug", "advps");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = join(root, "target");

function fail(message) {
  throw new Error(message);
}

// Another origin (a second port) whose page posts a form to the panel.
function startAttacker(target) {
  return new Promise((ok) => {
    const server = createServer((req, res) => {
      res.setHeader("content-type", "text/html");
      res.end(`<!doctype html><form id="f" method="POST" action="${target}/panel/api/v1/services/vps_service_1/stop">
        <input name="mode" value="force"></form><script>document.getElementById("f").submit()</script>`);
    });
    server.listen(0, "127.0.0.1", () => ok(server));
  });
}

async function stateIs(page, state) {
  await page.waitForSelector(`#state [data-state="${state}"]`, { timeout: 20000 });
}

// Aborts and records every request of `page` to another origin, and
// records page errors and console errors (an API refusal the page expects,
// 400 to 404, is logged by the browser too and is no problem).
async function watch(page, base) {
  const foreign = [];
  const problems = [];
  // Console errors a step provokes on purpose (a dropped answer).
  const expected = [];
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(base + "/") || url.startsWith(base.replace("http", "ws") + "/")) return route.continue();
    foreign.push(url);
    return route.abort();
  });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => {
    if (m.type() !== "error" || /status of 40[0134]/.test(m.text())) return;
    if (expected.some((re) => re.test(m.text()))) return;
    problems.push("console: " + m.text());
  });
  return { foreign, problems, expected };
}

// A webhook receiver on loopback: answers 200 and keeps what it was sent.
function startReceiver() {
  return new Promise((ok) => {
    const received = [];
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => { body += d; });
      req.on("end", () => {
        received.push({ id: req.headers["webhook-id"], signature: req.headers["webhook-signature"], body });
        res.end("ok");
      });
    });
    server.listen(0, "127.0.0.1", () => ok({ server, received }));
  });
}

async function signIn(page, base, key) {
  await page.goto(base + "/panel", { waitUntil: "load" });
  await page.fill("#api-key", key);
  await page.click("#sign-in button[type=submit]");
  await page.waitForSelector("#services tbody tr");
}

// A second server, which lets webhooks reach loopback: a purchase refused
// for its RAM size and bought on the second try; ten more bought through
// the API, so that the ledger and the orders list page; then a webhook created
// (its secret shown once), a power change delivered to it and redelivered,
// its secret rotated, the webhook deleted.
async function secondServer(browser, steps) {
  const dataDir = mkdtempSync(join(tmpdir(), "advps-panel-hooks-"));
  const { server: receiver, received } = await startReceiver();
  const { child, base, key } = await startServer(bin, dataDir, {
    env: { ADVPS_SANDBOX_TASK_SECONDS: "3", ADVPS_WEBHOOK_ALLOW_PRIVATE: "true" },
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const { foreign, problems } = await watch(page, base);
    await signIn(page, base, key);

    // A RAM size the product is not sold in: the server's refusal shows,
    // the form offers the sizes it named, and buying again (under a new
    // Idempotency-Key, the refusal being stored under the old one) works.
    await page.click('a[href="#/buy"]');
    await page.waitForSelector("#buy-form");
    await page.selectOption("#buy-product", "prod_abc123");
    await page.evaluate(() => {
      const ram = document.getElementById("buy-ram");
      ram.append(new Option("3 GB", "3 GB"));
      ram.value = "3 GB";
    });
    await page.click("#buy");
    await page.waitForFunction(() => /RAM size 3 GB is not available/.test(document.getElementById("flash").textContent));
    const offered = await page.locator("#buy-ram option").evaluateAll((os) => os.map((o) => o.value));
    if (offered.join() !== "4 GB") fail("RAM sizes offered after the refusal: " + offered);
    await page.click("#buy");
    await page.waitForSelector("#order-status[data-status=COMPLETED]", { timeout: 60000 });
    steps.push("RAM refusal, then bought");
    const firstOrder = await page.locator("#buy-result h2[data-order]").getAttribute("data-order");

    // Ten more orders, through the API: the ledger (12 entries) and the
    // orders (11) then take two pages each.
    for (let i = 0; i < 10; i++) {
      const r = await fetch(`${base}/api/v1/purchase/linux`, {
        method: "POST", headers: { "x-api-key": key, "content-type": "application/json" },
        body: JSON.stringify({ productId: "prod_abc123", ram: "4 GB" }),
      });
      if (!r.ok) fail("API purchase answered " + r.status);
    }
    await page.click('a[href="#/orders"]');
    // The ledger and the orders load side by side: wait for both.
    await page.waitForSelector("#ledger tbody tr");
    await page.waitForSelector("#orders tbody tr");
    const rowsOf = (id) => page.locator(`#${id} tbody tr`).count();
    if ((await rowsOf("ledger")) !== 10 || (await rowsOf("orders")) !== 10) fail("first pages are not 10 rows each");
    if (await page.locator("#ledger-prev").isEnabled()) fail("Previous enabled on page 1");
    await page.click("#ledger-next");
    await page.waitForFunction(() => document.getElementById("ledger-page").textContent === "page 2 of 2");
    if ((await rowsOf("ledger")) !== 2) fail("ledger page 2 has " + (await rowsOf("ledger")) + " rows");
    if ((await page.locator("#ledger tbody tr").last().getAttribute("data-kind")) !== "credit") fail("the oldest entry is not the starting credit");
    if (await page.locator("#ledger-next").isEnabled()) fail("Next enabled on the last page");
    await page.click("#orders-next");
    await page.waitForFunction(() => document.getElementById("orders-page").textContent === "page 2 of 2");
    const oldest = await page.locator("#orders tr[data-order]").evaluateAll((rows) => rows.map((r) => r.dataset.order));
    if (oldest.join() !== firstOrder) fail(`orders page 2 is ${oldest}, not ${firstOrder}`);
    await page.click("#ledger-prev");
    await page.waitForFunction(() => document.getElementById("ledger-page").textContent === "page 1 of 2");
    steps.push("ledger and orders paged");

    const target = `http://127.0.0.1:${receiver.address().port}/hook`;

    await page.click('a[href="#/webhooks"]');
    await page.waitForSelector("#webhook-form");
    await page.fill("#webhook-url", target);
    await page.fill("#webhook-description", "panel check");
    await page.check("#event-service\\.power_state_changed");
    await page.click("#create-webhook");
    await page.waitForSelector("#webhook-secret");
    const secret = await page.locator("#webhook-secret").innerText();
    if (!/^whsec_/.test(secret)) fail("webhook secret " + secret);
    const row = page.locator("#webhooks tr[data-webhook]");
    await row.first().waitFor();
    if ((await row.count()) !== 1) fail("webhooks listed: " + (await row.count()));
    const listed = await row.first().innerText();
    if (!listed.includes(target) || !listed.includes("service.power_state_changed")) fail("webhook row " + listed);
    if (listed.includes(secret)) fail("the list shows the secret");
    const hookId = await row.first().getAttribute("data-webhook");
    steps.push("webhook created");

    // A power change is delivered; the delivery is listed and sent again.
    await page.goto(base + "/panel#/service/vps_service_1");
    await stateIs(page, "RUNNING");
    await page.click("#stop");
    await stateIs(page, "STOPPED");
    await page.click('a[href="#/webhooks"]');
    await page.click(`button[data-deliveries="${hookId}"]`);
    for (let i = 0; i < 30; i++) {
      if (await page.locator('#deliveries td[data-status="delivered"]').count()) break;
      await page.waitForTimeout(500);
      await page.click("#deliveries-refresh");
    }
    if (!(await page.locator('#deliveries td[data-status="delivered"]').count())) fail("no delivered delivery listed");
    if (received.length !== 1) fail("receiver got " + received.length + " requests");
    const deliveryId = await page.locator("#deliveries tr[data-delivery]").first().getAttribute("data-delivery");
    if (deliveryId !== received[0].id) fail(`delivery ${deliveryId} arrived as ${received[0].id}`);
    await page.screenshot({ path: join(shots, "panel-webhooks.png"), fullPage: true });
    await page.click(`button[data-redeliver="${deliveryId}"]`);
    for (let i = 0; i < 30 && received.length < 2; i++) await page.waitForTimeout(300);
    if (received.length !== 2 || received[1].id !== deliveryId) fail("redelivery: " + JSON.stringify(received.map((r) => r.id)));
    steps.push("webhook delivered and redelivered");

    // Rotate: a new secret, shown once.
    await page.click(`button[data-rotate="${hookId}"]`);
    await page.waitForFunction((old) => {
      const el = document.getElementById("webhook-secret");
      return el && el.textContent !== old && el.textContent.startsWith("whsec_");
    }, secret);

    // Delete: the list is empty again.
    await page.click(`button[data-delete="${hookId}"]`);
    await page.waitForFunction(() => !document.querySelector("#webhooks tr[data-webhook]"));
    steps.push("webhook rotated and deleted");

    if (foreign.length) fail("the webhooks page loaded from elsewhere: " + foreign.join(", "));
    if (problems.length) fail(problems.join("\n"));
    await context.close();
  } finally {
    child.kill("SIGTERM");
    receiver.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), "advps-panel-"));
  const { child, base, key } = await startServer(bin, dataDir, {
    // Sandbox tasks take 3 s here rather than 20.
    env: { ADVPS_SANDBOX_TASK_SECONDS: "3" },
  });
  const attacker = await startAttacker(base);
  mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", "--metrics-recording-only", "--disable-default-apps"],
  });
  const steps = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const { foreign, problems, expected } = await watch(page, base);

    // Sign in; the key is nowhere in the browser's storage afterwards.
    const resp = await page.goto(base + "/panel", { waitUntil: "load" });
    const csp = resp.headers()["content-security-policy"] || "";
    if (!csp.includes("script-src 'self'")) fail("no CSP on /panel: " + csp);
    await page.waitForSelector("#api-key");
    await page.screenshot({ path: join(shots, "panel-sign-in.png") });
    await page.fill("#api-key", "sk_test_wrongwrongwrongwrongwrongwron");
    await page.click("#sign-in button[type=submit]");
    await page.waitForSelector("#flash:not([hidden])");
    const refused = await page.locator("#flash").innerText();
    if (!refused.includes("Missing or invalid API key")) fail("bad key message: " + refused);
    await page.fill("#api-key", key);
    await page.click("#sign-in button[type=submit]");
    await page.waitForSelector("#services tbody tr");
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
    if (stored.includes(key) || stored.includes("advps_session")) fail("key or cookie visible to scripts: " + stored);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === "advps_session");
    if (!session || !session.httpOnly || session.sameSite !== "Strict") fail("cookie: " + JSON.stringify(session));
    if (!page.url().endsWith("#/services")) fail("after sign-in at " + page.url());
    const rows = await page.locator("#services tbody tr").count();
    if (rows < 3) fail("services list has " + rows + " rows");
    await page.screenshot({ path: join(shots, "panel-services.png") });
    steps.push("sign-in");

    // The cross-site form post: the browser sends it, the panel refuses it.
    const evil = await context.newPage();
    const posted = evil.waitForResponse((r) => r.url().includes("/panel/api/v1/services/vps_service_1/stop"));
    await evil.goto(`http://127.0.0.1:${attacker.address().port}/`);
    const answer = await posted;
    if (answer.status() !== 403) fail("cross-site form post answered " + answer.status());
    await evil.close();
    steps.push("cross-site post refused");

    // A service: stop and start.
    await page.click('a[href="#/service/vps_service_1"]');
    await stateIs(page, "RUNNING");
    await page.screenshot({ path: join(shots, "panel-service.png"), fullPage: true });
    await page.click("#stop");
    await stateIs(page, "STOPPED");
    await page.click("#start");
    await stateIs(page, "RUNNING");
    steps.push("stop/start");

    // Charts, every period.
    for (const period of ["1h", "24h", "7d", "30d"]) {
      await page.click(`button[data-period="${period}"]`);
      await page.waitForSelector(`#charts[data-period="${period}"] [data-chart="cpu"]`);
    }
    await page.click('button[data-period="1h"]');
    await page.waitForSelector('#charts[data-period="1h"] [data-chart="network"]');
    steps.push("charts");

    // Password, shown once.
    await page.click("#generate-password");
    await page.waitForSelector("#password");
    const password = await page.locator("#password").innerText();
    if (password.length < 12) fail("password " + password);
    steps.push("password");

    // The console: the sandbox's simulated shell through xterm.js.
    await page.click("#open-console");
    await page.waitForFunction(() => document.getElementById("console-state").textContent === "Connected", null, { timeout: 15000 });
    await page.locator("#terminal").click();
    await page.keyboard.type("echo panel-console-ok\r");
    await page.waitForFunction(() => {
      const rows = document.querySelector("#terminal .xterm-rows");
      return rows && (rows.textContent.match(/panel-console-ok/g) || []).length >= 2;
    }, null, { timeout: 15000 });
    await page.locator("section[aria-labelledby=console-h]").screenshot({ path: join(shots, "panel-console.png") });
    await page.click("#close-console");
    steps.push("console echo");

    // Rebuild: the bar follows the task to 100 %.
    await page.selectOption("#rebuild-os", { index: 0 });
    await page.click("#rebuild");
    await page.waitForSelector("#rebuild-state[data-status=COMPLETED]", { timeout: 60000 });
    const value = await page.locator("#rebuild-progress").evaluate((el) => el.value);
    if (value !== 100) fail("bar at " + value);
    await page.screenshot({ path: join(shots, "panel-rebuild.png"), fullPage: true });
    steps.push("rebuild 100%");

    // Calls through the API: one about another service, so that a filter
    // has something to leave out, and six about this one, so that its audit
    // log takes two pages of ten.
    for (const [id, action] of [["lxc_service_1", "generate-password"], ...Array(6).fill(["vps_service_1", "get-ip"])]) {
      const r = await fetch(`${base}/api/v1/services/${id}/${action}`, { method: "POST", headers: { "x-api-key": key } });
      if (!r.ok) fail(`API ${action} of ${id} answered ${r.status}`);
    }

    // A new MAC address, after the confirmation; the old one is gone.
    const macPattern = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
    await page.click("#reset-mac");
    if (!(await page.locator("#reset-mac-ask").isVisible())) fail("no confirmation before the MAC reset");
    await page.click("#reset-mac-confirm");
    await page.waitForSelector("#mac");
    const mac = await page.locator("#mac").innerText();
    if (!macPattern.test(mac)) fail("new MAC " + mac);
    steps.push("MAC reset " + mac);

    // The audit log: that reset is its newest entry, answered 200.
    await page.click('a[href="#/audit"]');
    await page.waitForSelector("#audit tbody tr");
    const auditRow = async (i) => {
      const row = page.locator("#audit tbody tr").nth(i);
      return { path: await row.getAttribute("data-path"), status: await row.getAttribute("data-status"),
        service: await row.getAttribute("data-service"), text: await row.innerText() };
    };
    const newestCall = await auditRow(0);
    if (newestCall.path !== "/api/v1/services/vps_service_1/reset-mac" || newestCall.status !== "200"
      || !newestCall.text.includes("POST") || !/req_/.test(newestCall.text)) fail("newest audit entry " + JSON.stringify(newestCall));

    // A second reset the same day is refused, with the API's message.
    await page.goto(base + "/panel#/service/vps_service_1");
    await stateIs(page, "RUNNING");
    expected.push(/status of 429/);
    await page.click("#reset-mac");
    await page.click("#reset-mac-confirm");
    await page.waitForFunction(() => /once every 24 hours/.test(document.getElementById("flash").textContent));
    expected.pop();
    steps.push("second MAC reset refused");

    // The service's own log from its page: only its entries, two pages.
    await page.click("#service-audit");
    await page.waitForSelector('#audit[data-service="vps_service_1"] tbody tr');
    if ((await page.locator("#audit-service").inputValue()) !== "vps_service_1") fail("the audit filter is not the service");
    const servicesOn = () => page.locator("#audit tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.service));
    const first = await servicesOn();
    if (first.length !== 10 || first.some((s) => s !== "vps_service_1")) fail("service audit page 1: " + first);
    const refusedCall = await auditRow(0);
    if (!refusedCall.path.endsWith("/reset-mac") || refusedCall.status !== "429") fail("newest service entry " + JSON.stringify(refusedCall));
    await page.click("#audit-next");
    await page.waitForFunction(() => document.getElementById("audit-page").textContent === "page 2 of 2");
    const second = await servicesOn();
    if (!second.length || second.some((s) => s !== "vps_service_1")) fail("service audit page 2: " + second);
    if (await page.locator("#audit-next").isEnabled()) fail("audit Next enabled on the last page");

    // All services, then the filter chosen by hand: another service's
    // entries leave the table.
    await page.click('a[href="#/audit"]');
    await page.waitForFunction(() => document.getElementById("audit").dataset.service === "");
    if (!(await servicesOn()).includes("lxc_service_1")) fail("the whole audit log lacks lxc_service_1");
    await page.selectOption("#audit-service", "vps_service_1");
    await page.click("#audit-form button[type=submit]");
    await page.waitForSelector('#audit[data-service="vps_service_1"] tbody tr');
    const filtered = await servicesOn();
    if (filtered.length !== 10 || filtered.some((s) => s !== "vps_service_1")) fail("filtered audit: " + filtered);
    if (!page.url().endsWith("#/audit/vps_service_1")) fail("filtered audit at " + page.url());
    await page.screenshot({ path: join(shots, "panel-audit.png"), fullPage: true });
    steps.push("audit log");

    // Keys: create (shown once) and revoke it.
    await page.click('a[href="#/keys"]');
    await page.waitForSelector("#keys tbody tr");
    const before = await page.locator("#keys tbody tr").count();
    await page.click("#create-key");
    await page.waitForSelector("#created-key");
    const created = await page.locator("#created-key").innerText();
    if (!/^sk_test_[A-Za-z0-9]{32}$/.test(created)) fail("created key " + created);
    await page.waitForFunction((n) => document.querySelectorAll("#keys tbody tr").length === n + 1, before);
    await page.screenshot({ path: join(shots, "panel-keys.png") });
    const newest = page.locator("#keys tbody tr").last();
    await newest.locator("button[data-revoke]").click();
    await page.waitForFunction((n) => document.querySelectorAll("#keys tbody tr").length === n, before);
    steps.push("key create/revoke");

    // The key's quota as /me reports it (asking costs nothing, so the
    // figures still match).
    await page.waitForSelector("#quota[data-remaining]");
    const me = await page.evaluate(async () => (await (await fetch("/panel/api/v1/me")).json()).data);
    const shownQuota = await page.locator("#quota").evaluate((el) => ({ ...el.dataset, text: el.innerText }));
    const q = me.rateLimit;
    if (Number(shownQuota.limit) !== q.limit || Number(shownQuota.remaining) !== q.remaining
      || !shownQuota.text.includes(`${q.remaining} of ${q.limit}`) || !shownQuota.text.includes(me.keyLast4)
      || !(Number(shownQuota.reset) > 0 && Number(shownQuota.reset) <= q.windowSeconds)) {
      fail(`quota shown ${JSON.stringify(shownQuota)}, /me says ${JSON.stringify(me)}`);
    }
    steps.push(`quota ${q.remaining}/${q.limit}`);

    // The wallet before buying.
    await page.click('a[href="#/orders"]');
    await page.waitForSelector("#balance [data-amount]");
    const balanceBefore = Number(await page.locator("#balance [data-amount]").getAttribute("data-amount"));

    // Buy one container: the order is followed to COMPLETED and the new
    // service's password is shown once; the service is then listed.
    await page.click('a[href="#/buy"]');
    await page.waitForSelector("#buy-form");
    await page.selectOption("#buy-product", "prod_abc123");
    if (await page.locator("#buy-vps-fields").isVisible()) fail("name/email asked for a container");
    const osFamilies = await page.locator("#buy-os option").evaluateAll((os) => os.map((o) => o.value));
    if (!osFamilies.includes("debian-12") || osFamilies.some((v) => /windows/i.test(v))) fail("container OS list " + osFamilies);
    await page.selectOption("#buy-os", "debian-12");
    await page.fill("#buy-validity", "30");
    const buyPosts = [];
    page.on("request", (r) => {
      if (r.method() === "POST" && r.url().includes("/panel/api/v1/purchase/")) buyPosts.push(r.headers()["idempotency-key"]);
    });
    await page.click("#buy");
    await page.waitForSelector("#order-status[data-status=COMPLETED]", { timeout: 60000 });
    const bought = (await page.locator("#buy-result h2").first().innerText()).replace("Order ", "");
    if (!/^LXC\d{6}-\d{4}$/.test(bought)) fail("order id " + bought);
    if (buyPosts.length !== 1 || !/^[0-9a-f-]{36}$/.test(buyPosts[0] || "")) fail("purchase POSTs " + JSON.stringify(buyPosts));
    const paid = Number(await page.locator("#order-status").getAttribute("data-total"));
    if (!(paid > 0)) fail("order total " + paid);
    const newService = await page.locator("#order-services [data-service]").first().getAttribute("data-service");
    const newPassword = await page.locator(`[data-password="${newService}"]`).innerText();
    if (newPassword.length < 12) fail("purchase password " + newPassword);
    const address = await page.locator(`#order-services [data-service="${newService}"] dd`).first().innerText();
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(address)) fail("purchase address " + address);
    await page.screenshot({ path: join(shots, "panel-buy.png"), fullPage: true });
    // A VPS needs a name and an email: the form asks for them.
    await page.selectOption("#buy-product", "prod_stu901");
    if (!(await page.locator("#buy-email").isVisible()) || !(await page.locator("#buy-email").evaluate((e) => e.required))) fail("no email field for a VPS");
    await page.click('a[href="#/services"]');
    await page.waitForSelector(`#services tr[data-service="${newService}"]`);
    steps.push("buy " + bought);

    // Webhooks: a loopback address is refused with the server's message.
    await page.click('a[href="#/webhooks"]');
    await page.waitForSelector("#webhook-form");
    // By keyboard: type the URL, Enter sends the form.
    await page.focus("#webhook-url");
    await page.keyboard.type("http://127.0.0.1:9/x");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#flash:not([hidden])");
    const privateRefused = await page.locator("#flash").innerText();
    if (!privateRefused.includes("private or loopback address")) fail("webhook refusal " + privateRefused);
    if (await page.locator("#webhooks tr[data-webhook]").count()) fail("a refused webhook is listed");
    steps.push("webhook refused");

    // Orders & wallet: the balance went down by the order's total, the
    // ledger's newest entry is that purchase, the orders list has it and
    // opens it.
    await page.click('a[href="#/orders"]');
    await page.waitForSelector("#balance [data-amount]");
    const balanceAfter = Number(await page.locator("#balance [data-amount]").getAttribute("data-amount"));
    if (Math.abs(balanceBefore - paid - balanceAfter) > 0.001) fail(`balance ${balanceBefore} - ${paid} shows ${balanceAfter}`);
    const shownBalance = await page.locator("#balance").innerText();
    if (!shownBalance.includes(balanceAfter.toFixed(2))) fail("balance reads " + shownBalance);
    const latest = page.locator("#ledger tbody tr").first();
    const entry = { kind: await latest.getAttribute("data-kind"), text: await latest.innerText(),
      amount: Number(await latest.locator("td[data-amount]").getAttribute("data-amount")) };
    if (entry.kind !== "purchase" || !entry.text.includes(bought) || Math.abs(entry.amount + paid) > 0.001) fail("newest ledger entry " + JSON.stringify(entry));
    const listedOrder = page.locator(`#orders tr[data-order="${bought}"]`);
    if (!(await listedOrder.count())) fail("orders table lacks " + bought);
    if (!(await listedOrder.innerText()).includes("COMPLETED")) fail("order row " + (await listedOrder.innerText()));
    await listedOrder.locator("button[data-open-order]").click();
    await page.waitForFunction((id) => (document.querySelector("#order h2") || {}).textContent === `Order ${id}`, bought);
    if (!(await page.locator(`#order a[href="#/service/${newService}"]`).count())) fail("opened order lacks " + newService);
    await page.screenshot({ path: join(shots, "panel-orders.png"), fullPage: true });
    steps.push("wallet and orders");

    // An unknown order shows the API's message.
    await page.fill("#order-id", "VPS000000-0000");
    await page.click("#order-form button[type=submit]");
    await page.waitForSelector("#flash:not([hidden])");
    const notFound = await page.locator("#flash").innerText();
    if (!/Order not found/.test(notFound)) fail("order message " + notFound);
    steps.push("orders");

    // A VPS, whose first answer is lost on the way back: buying again with
    // the same form sends the same Idempotency-Key, and the server replays
    // the first order instead of placing a second.
    await page.click('a[href="#/buy"]');
    await page.waitForSelector("#buy-form");
    await page.selectOption("#buy-product", "prod_stu901");
    await page.fill("#buy-name", "Jane Doe");
    await page.fill("#buy-email", "jane@example.com");
    const vpsKeys = [];
    let dropped = 0;
    expected.push(/ERR_CONNECTION_RESET|ERR_FAILED/);
    await page.route("**/panel/api/v1/purchase/vps", async (route) => {
      vpsKeys.push(route.request().headers()["idempotency-key"]);
      if (dropped++ > 0) return route.continue();
      await route.fetch();
      return route.abort("connectionreset");
    });
    await page.click("#buy");
    await page.waitForFunction(() => /cannot be reached/.test(document.getElementById("flash").textContent));
    const replayed = page.waitForResponse((r) => r.url().endsWith("/panel/api/v1/purchase/vps"));
    await page.click("#buy");
    if ((await (await replayed).headerValue("idempotent-replayed")) !== "true") fail("the second purchase POST was not a replay");
    await page.waitForSelector("#order-status[data-status=COMPLETED]", { timeout: 60000 });
    await page.unroute("**/panel/api/v1/purchase/vps");
    expected.pop();
    if (vpsKeys.length !== 2 || vpsKeys[0] !== vpsKeys[1]) fail("VPS purchase keys " + JSON.stringify(vpsKeys));
    const vpsOrder = await page.locator("#buy-result h2[data-order]").getAttribute("data-order");
    await page.click('a[href="#/orders"]');
    await page.waitForSelector(`#orders tr[data-order="${vpsOrder}"]`);
    const orderIds = await page.locator("#orders tr[data-order]").evaluateAll((rows) => rows.map((r) => r.dataset.order));
    if (orderIds.length !== 2 || orderIds[0] !== vpsOrder || orderIds[1] !== bought) fail("orders after the VPS retry " + orderIds);
    steps.push("VPS bought once despite a retry");

    // Readable at 375 px: nothing wider than the screen.
    await page.setViewportSize({ width: 375, height: 800 });
    await page.click('a[href="#/services"]');
    await page.waitForSelector("#services tbody tr");
    await page.goto(base + "/panel#/service/vps_service_1");
    await stateIs(page, "RUNNING");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    if (overflow > 380) fail("page is " + overflow + " px wide at 375");
    await page.screenshot({ path: join(shots, "panel-service-375.png") });
    for (const [hash, ready] of [["#/buy", "#buy-form"], ["#/orders", "#order-form"], ["#/webhooks", "#webhook-form"]]) {
      await page.click(`a[href="${hash}"]`);
      await page.waitForSelector(ready);
      const wide = await page.evaluate(() => document.documentElement.scrollWidth);
      if (wide > 380) fail(`${hash} is ${wide} px wide at 375`);
    }
    await page.screenshot({ path: join(shots, "panel-webhooks-375.png") });
    await page.click('a[href="#/audit"]');
    await page.waitForSelector("#audit tbody tr");
    const auditWide = await page.evaluate(() => document.documentElement.scrollWidth);
    if (auditWide > 380) fail(`#/audit is ${auditWide} px wide at 375`);
    await page.screenshot({ path: join(shots, "panel-audit-375.png"), fullPage: true });
    steps.push("375 px");

    // Sign out: the API through the page is closed again.
    await page.click("#sign-out");
    await page.waitForSelector("#api-key");
    const after = await page.evaluate(async () => (await fetch("/panel/api/v1/services")).status);
    if (after !== 401) fail("after sign-out the API answered " + after);
    steps.push("sign-out");

    if (foreign.length) fail("the page tried to load from elsewhere: " + foreign.join(", "));
    if (problems.length) fail(problems.join("\n"));

    await secondServer(browser, steps);
    console.log("panel OK: " + steps.join(", "));
    console.log("screenshots: target/panel-{sign-in,services,service,console,rebuild,keys,buy,orders,webhooks,audit,service-375,webhooks-375,audit-375}.png");
  } finally {
    await browser.close();
    attacker.close();
    child.kill("SIGTERM");
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error("panel check failed: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
