// The panel's console on a real LXD container, in headless Chromium: a
// fresh container from the `advps-debian-12` image is bound as a LINUX
// service of an account with a live key (through the command line, as an
// operator would), then the page signs in with that key, opens the
// service, generates a password (read from the page, as a user copies it),
// opens the console, logs in at the container's getty as root with that
// password, runs `echo panel-$((6*7))` and waits for `panel-42` in the
// terminal; after the window is resized (the terminal refits and sends the
// new size) a second command must still answer. The console must close
// when the service stops. Screenshot: target/panel-live-console.png.
//
// The server, the container and the data directory are removed however
// the run ends.
//
//   node panel-live.mjs
//
// Needs LXD (its `lxc` client, the `advps-debian-12` image) and root.
// ADVPS_BIN (default target/debug/advps) and CHROMIUM (default
// /usr/bin/chromium) can point elsewhere.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { cleanEnv, startServer } from "./server.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = process.env.ADVPS_BIN || join(root, "target", "debug", "advps");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = join(root, "target");
const LXD_SOCKET = "/var/lib/lxd/unix.socket";
const IMAGE = "advps-debian-12";
// Addresses .232-.239 of the test network: no other live test uses them.
const POOL = { cidr: "198.51.100.0/24", gateway: "198.51.100.1", range: "198.51.100.232-198.51.100.239" };
// How long the guest may take to boot, and to answer on its console.
const BOOT_MS = 120000;
const CONSOLE_MS = 30000;

function fail(message) {
  throw new Error(message);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function lxc(...args) {
  return execFileSync("lxc", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

// The container is up once its init is (the getty starts with it).
async function waitForBoot(name) {
  const deadline = Date.now() + BOOT_MS;
  let state = "";
  while (Date.now() < deadline) {
    try {
      state = lxc("exec", name, "--", "sh", "-c", "systemctl is-system-running 2>/dev/null || true").trim();
      if (state === "running" || state === "degraded") return;
    } catch { /* not started yet */ }
    await sleep(500);
  }
  fail(`${name} did not boot in ${BOOT_MS / 1000} s (last state ${JSON.stringify(state)})`);
}

// The operator's command line on the same data directory; its changes
// reach the running server within a second.
function cli(dataDir, ...args) {
  try {
    return execFileSync(bin, [...args, "--data-dir", dataDir], {
      encoding: "utf8", env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (e) {
    fail(`advps ${args.join(" ")} failed:\n${e.stdout}${e.stderr}`);
  }
}

const lastLine = (out) => out.trim().split("\n").pop().trim();

function prepare(dataDir, container) {
  cli(dataDir, "accounts", "create", "acme");
  cli(dataDir, "nodes", "add", "local", "--driver", "lxd", "--endpoint", `unix://${LXD_SOCKET}`);
  cli(dataDir, "os", "add", "debian-12", "--name", "Debian 12", "--type", "lxc", "--image", IMAGE);
  cli(dataDir, "ippools", "add", "t1", "--cidr", POOL.cidr, "--gateway", POOL.gateway, "--range", POOL.range);
  cli(dataDir, "nodes", "sync", "local");
  const service = lastLine(cli(dataDir, "services", "create", "--account", "acme", "--node", "local",
    "--instance", container, "--type", "LINUX", "--os", "debian-12"));
  if (!/^[A-Za-z0-9_]+$/.test(service)) fail("services create printed no id: " + service);
  const key = lastLine(cli(dataDir, "keys", "create", "--account", "acme", "--mode", "live"));
  if (!/^sk_live_[A-Za-z0-9]{32}$/.test(key)) fail("keys create printed no live key: " + key);
  return { service, key };
}

// What the terminal shows now (xterm's DOM renderer: one element per row).
function screen(page) {
  return page.evaluate(() => {
    const rows = document.querySelector("#terminal .xterm-rows");
    return rows ? [...rows.children].map((r) => r.textContent).join("\n") : "";
  });
}

// Waits until the terminal shows `needle`, pressing Enter every few seconds
// meanwhile if `nudge` (a getty prints its prompt again on Enter).
async function expect(page, needle, nudge = false) {
  const deadline = Date.now() + CONSOLE_MS;
  let next = 0;
  for (;;) {
    const text = await screen(page);
    if (text.includes(needle)) return text;
    if (Date.now() > deadline) fail(`no ${JSON.stringify(needle)} in the terminal in time; it shows:\n${text}`);
    if (nudge && Date.now() >= next) {
      await page.keyboard.press("Enter");
      next = Date.now() + 3000;
    }
    await sleep(250);
  }
}

async function main() {
  const container = "advps-test-panel-" + randomBytes(5).toString("hex");
  const dataDir = mkdtempSync(join(tmpdir(), "advps-panel-live-"));
  let server = null;
  let browser = null;
  let launched = false;
  const cleanup = () => {
    if (server && server.child.exitCode === null) {
      try { process.kill(server.child.pid, "SIGTERM"); } catch { /* gone already */ }
    }
    if (launched) {
      // LXD refuses while the launch is still under way (an interrupted
      // run): try again for a minute.
      const until = Date.now() + 60000;
      for (;;) {
        try {
          lxc("delete", "--force", container);
          break;
        } catch (e) {
          if (/not found/i.test(e.stderr)) break;
          if (Date.now() > until) { console.error("could not delete " + container + ": " + e.stderr); break; }
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
        }
      }
      launched = false;
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  const onSignal = (signal) => { cleanup(); process.exit(signal === "SIGINT" ? 130 : 143); };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const steps = [];
  try {
    launched = true;
    lxc("launch", IMAGE, container);
    server = await startServer(bin, dataDir, {
      // Live mode's rate limit would only get in the way of a test.
      env: { ADVPS_RATE_LIMIT_LIVE: "100000" }, waitForKey: false,
    });
    const { base } = server;
    await waitForBoot(container);
    const { service, key } = prepare(dataDir, container);
    // The server sees the command line's changes within a second.
    await sleep(1000);
    steps.push("container and live service");

    mkdirSync(shots, { recursive: true });
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--metrics-recording-only", "--disable-default-apps"],
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    page.on("console", (m) => {
      if (m.type() === "error" && !/status of 40[134]/.test(m.text())) problems.push("console: " + m.text());
    });
    // What the page sends on the console's WebSocket (resizes are text frames).
    const sent = [];
    page.on("websocket", (ws) => ws.on("framesent", (f) => sent.push(f.payload)));

    // Sign in with the live key; the service is in the list.
    await page.goto(base + "/panel", { waitUntil: "load" });
    await page.waitForSelector("#api-key");
    await page.fill("#api-key", key);
    await page.click("#sign-in button[type=submit]");
    await page.waitForSelector(`a[href="#/service/${service}"]`, { timeout: 20000 });
    steps.push("sign-in (live)");

    await page.click(`a[href="#/service/${service}"]`);
    await page.waitForSelector('#state [data-state="RUNNING"]', { timeout: 20000 });

    // The password, as the user copies it off the page.
    await page.click("#generate-password");
    await page.waitForSelector("#password", { timeout: 30000 });
    const password = (await page.locator("#password").innerText()).trim();
    if (password.length < 12) fail("password " + JSON.stringify(password));
    steps.push("password");

    // The console: the container's /dev/console, where its getty runs.
    await page.click("#open-console");
    await page.waitForFunction(() => document.getElementById("console-state").textContent === "Connected",
      null, { timeout: CONSOLE_MS }).catch(async () => fail("the console did not connect; the page says: "
        + JSON.stringify(await page.evaluate(() => [document.getElementById("console-state").textContent,
          document.getElementById("flash").innerText]))));
    await page.locator("#terminal").click();
    await expect(page, "login:", true);
    await page.keyboard.type("root\r");
    await expect(page, "assword:");
    await page.keyboard.type(password + "\r");
    await expect(page, "# ");
    await page.keyboard.type("echo panel-$((6*7))\r");
    await expect(page, "panel-42");
    steps.push("getty login, echo panel-42");

    // A smaller window: the terminal refits, tells the server, carries on.
    const before = sent.length;
    await page.setViewportSize({ width: 800, height: 700 });
    const deadline = Date.now() + 10000;
    let resize;
    while (!(resize = sent.slice(before).find((p) => typeof p === "string" && p.includes('"resize"')))) {
      if (Date.now() > deadline) fail("no resize sent on the console after the window shrank");
      await sleep(100);
    }
    await page.locator("#terminal").click();
    await page.keyboard.type("echo after-$((2+3))\r");
    await expect(page, "after-5");
    if (await page.evaluate(() => document.getElementById("console-state").textContent) !== "Connected") {
      fail("the console closed after the resize");
    }
    await page.locator("section[aria-labelledby=console-h]").screenshot({ path: join(shots, "panel-live-console.png") });
    steps.push("resize " + resize);

    // Stopping the service closes its console, and the page says why.
    await page.keyboard.type("exit\r");
    await page.selectOption("#power-mode", "force");
    await page.click("#stop");
    // (4000 "The service stopped." or, when the engine's console ends
    // with the container first, 1000 "The console ended.")
    await page.waitForFunction(() => /^The (service stopped|console ended)\.$/.test(document.getElementById("console-state").textContent),
      null, { timeout: CONSOLE_MS });
    steps.push("closed on stop");

    if (problems.length) fail(problems.join("\n"));
    console.log("panel live console OK: " + steps.join(", "));
    console.log("screenshot: target/panel-live-console.png");
  } catch (e) {
    if (server) console.error("server output:\n" + server.log());
    throw e;
  } finally {
    if (browser) await browser.close();
    cleanup();
  }
}

main().catch((e) => {
  console.error("panel live check failed: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
