// Starting a fresh `advps serve` for the browser tests: on a random port,
// with a given data directory, without any ADVPS_ setting of the calling
// shell (plus the test's own). Resolves with its base URL, the test key it
// prints on a first start (when asked to wait for it), and its output so far.

import { spawn } from "node:child_process";

// The environment without the caller's ADVPS_ settings, plus `extra`.
export function cleanEnv(extra = {}) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ADVPS_")));
  return { ...env, ...extra };
}

export function startServer(bin, dataDir, { env = {}, waitForKey = true } = {}) {
  return new Promise((resolveStart, rejectStart) => {
    const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir], {
      stdio: ["ignore", "pipe", "pipe"], env: cleanEnv(env),
    });
    let out = "";
    let err = "";
    const timer = setTimeout(() => rejectStart(new Error("server did not start:\n" + out + err)), 60000);
    child.stderr.on("data", (d) => { err += d; });
    child.stdout.on("data", (d) => {
      out += d;
      const url = out.match(/Listening on (http:\/\/[0-9.:]+)/);
      const key = out.match(/^(sk_test_[A-Za-z0-9]{32})$/m);
      if (url && (key || !waitForKey)) {
        clearTimeout(timer);
        resolveStart({ child, base: url[1], key: key?.[1], log: () => out + err });
      }
    });
    child.on("exit", (code) => rejectStart(new Error(`server exited (${code}):\n${out}${err}`)));
  });
}
