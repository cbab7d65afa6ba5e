// Starts the real `advps` binary for the tests: a random port, a fresh data
// directory, short sandbox timings, and the printed test key. The binary is
// $ADVPS_BIN, by default ../../target/debug/advps from this package.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:http";

const here = dirname(fileURLToPath(import.meta.url));
export const ADVPS_BIN = process.env.ADVPS_BIN
  ? resolve(process.env.ADVPS_BIN)
  : resolve(here, "../../../target/debug/advps");

/** @returns {Promise<{baseUrl: string, apiKey: string, stop: () => Promise<void>, stderr: () => string}>} */
export async function startServer(env = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "advps-sdk-ts-"));
  const child = spawn(ADVPS_BIN, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dataDir, "data")], {
    env: {
      ...process.env,
      ADVPS_SANDBOX_TASK_SECONDS: "1",
      ADVPS_SANDBOX_PROVISION_SECONDS: "1",
      ADVPS_WEBHOOK_ALLOW_PRIVATE: "true",
      ADVPS_WEBHOOK_RETRY_BASE_MS: "200",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const ready = new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`advps did not start in 30 s:\n${stdout}\n${stderr}`)), 30_000);
    child.stdout.on("data", (d) => {
      stdout += d;
      const url = stdout.match(/Listening on (http:\/\/[0-9.:]+)/);
      const key = stdout.match(/^(sk_test_[A-Za-z0-9]{32})$/m);
      if (url && key) {
        clearTimeout(timer);
        resolvePromise({ baseUrl: url[1], apiKey: key[1] });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`advps exited with ${code}:\n${stdout}\n${stderr}`));
    });
  });
  const { baseUrl, apiKey } = await ready;
  child.removeAllListeners("exit");
  const exited = new Promise((r) => child.once("exit", r));
  return {
    baseUrl,
    apiKey,
    stderr: () => stderr,
    async stop() {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A local HTTP receiver that records what is POSTed to it. */
export async function startReceiver() {
  const received = [];
  const waiters = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const delivery = { headers: req.headers, body: Buffer.concat(chunks).toString("utf8") };
      received.push(delivery);
      res.writeHead(200, { "content-type": "text/plain" }).end("ok");
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/hook`,
    received,
    /** Resolves with the first delivery `match` accepts, within `ms`. */
    async next(match = () => true, ms = 30_000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const found = received.find((d) => match(d));
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no matching delivery in ${ms} ms (got ${received.length})`);
        await new Promise((r) => {
          waiters.push(r);
          setTimeout(r, 500);
        });
      }
    },
    close: () =>
      new Promise((r) => {
        server.close(r);
        server.closeAllConnections();
      }),
  };
}
