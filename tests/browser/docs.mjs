// Opens /docs of a fresh `advps serve` in headless Chromium and checks that
// the reference renders from the OpenAPI document, that the page loads
// nothing from anywhere but the server, and that a "try it" call with the
// printed test key shows the response.
//
//   node docs.mjs               run the checks
//   node docs.mjs --screenshot  also write under target/: docs-top.png (the
//                               first screen), docs-endpoint.png (one
//                               endpoint), docs-try-it.png (the try-it panel
//                               after a call) and docs-page.png (full page)
//
// ADVPS_BIN (default target/debug/advps) and CHROMIUM (default
// /usr/bin/chromium) can point elsewhere.

import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = process.env.ADVPS_BIN || join(root, "target", "debug", "advps");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const screenshots = process.argv.includes("--screenshot");

// Every operation the page must render a section for.
const OPERATIONS = [
  "startService", "stopService", "rebootService", "configureIp", "getServiceStatus",
  "generatePassword", "rebuildService", "getTaskStatus", "renewServices", "resetMac",
  "listProductStock", "getProductStock", "listOs", "purchaseLinux", "purchaseVps",
  "getOrder", "getMe", "getLivez", "listServices", "getServiceMetrics",
];

function fail(message) {
  throw new Error(message);
}

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), "advps-docs-"));
  const { child, base, key } = await startServer(bin, dataDir);
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", "--metrics-recording-only", "--disable-default-apps"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
    const foreign = [];
    const problems = [];
    // Anything but this server is refused and recorded: the page must work offline.
    await page.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith(base + "/")) return route.continue();
      foreign.push(url);
      return route.abort();
    });
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });

    const resp = await page.goto(base + "/docs", { waitUntil: "load" });
    if (!resp || resp.status() !== 200) fail("GET /docs answered " + (resp && resp.status()));
    await page.waitForSelector("body[data-ready=true]", { timeout: 15000 });

    for (const heading of ["Authentication", "API modes", "Response format", "Rate limits", "Try it"]) {
      const found = await page.locator("h2", { hasText: heading }).count();
      if (!found) fail("no section " + heading);
    }
    for (const id of OPERATIONS) {
      const section = page.locator(`#op-${id}`);
      if ((await section.count()) !== 1) fail("no section for " + id);
      const text = await section.innerText();
      if (!/curl -X (GET|POST)/.test(text)) fail(id + ": no curl example");
    }
    const start = await page.locator("#op-startService").innerText();
    for (const expected of ["/api/v1/services/{serviceId}/start", "Start Service", "Service not found or not accessible",
      "VPS service started successfully", "serviceId"]) {
      if (!start.includes(expected)) fail("start section lacks " + JSON.stringify(expected));
    }

    // Try it: the status of the running sandbox VPS with the printed key.
    await page.locator("#op-getServiceStatus .try-link").click();
    await page.fill("#try-key", key);
    await page.fill("#try-param-serviceId", "vps_service_1");
    await page.click("#try-send");
    await page.waitForSelector("body[data-try-status]", { timeout: 15000 });
    const status = await page.locator("#try-status").innerText();
    if (!status.startsWith("200")) fail("try-it status " + status);
    const body = JSON.parse(await page.locator("#try-response").innerText());
    if (body.message !== "Service status retrieved successfully") fail("try-it body " + JSON.stringify(body));
    if (body.data.serviceId !== "vps_service_1" || body.data.mode !== "test") fail("try-it data " + JSON.stringify(body.data));
    const headers = await page.locator("#try-headers").innerText();
    for (const h of ["ratelimit-remaining", "x-request-id", "etag"]) {
      if (!headers.includes(h)) fail("try-it headers lack " + h + ": " + headers);
    }

    if (screenshots) {
      mkdirSync(join(root, "target"), { recursive: true });
      // The sticky header would be stitched into element screenshots.
      await page.addStyleTag({ content: ".top { position: static; }" });
      await page.locator("#try-it").screenshot({ path: join(root, "target", "docs-try-it.png") });
      await page.locator("#op-stopService").screenshot({ path: join(root, "target", "docs-endpoint.png") });
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.screenshot({ path: join(root, "target", "docs-top.png") });
      await page.screenshot({ path: join(root, "target", "docs-page.png"), fullPage: true });
      console.log("screenshots: target/docs-top.png, docs-endpoint.png, docs-try-it.png, docs-page.png (full page)");
    }
    if (foreign.length) fail("the page tried to load from elsewhere: " + foreign.join(", "));
    if (problems.length) fail(problems.join("\n"));
    console.log(`docs page OK: ${OPERATIONS.length} endpoint sections, try-it ${status}`);
  } finally {
    await browser.close();
    child.kill("SIGTERM");
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error("docs page check failed: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
