// The examples run against a fresh server as a user would run them.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { startServer } from "./server.mjs";

const run = promisify(execFile);
const examples = join(dirname(fileURLToPath(import.meta.url)), "..", "examples");

let server;
before(async () => (server = await startServer()));
after(async () => server?.stop());

test("examples/reseller.mjs runs the whole flow", async () => {
  const { stdout } = await run(process.execPath, [join(examples, "reseller.mjs")], {
    env: { ...process.env, ADVPS_API_KEY: server.apiKey, ADVPS_BASE_URL: server.baseUrl },
    timeout: 120_000,
  });
  assert.match(stdout, /order \S+ COMPLETED/);
  assert.match(stdout, /rebuild COMPLETED/);
  assert.match(stdout, /webhook verified: task.completed/);
});
