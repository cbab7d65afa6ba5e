// The ADVPS client: HTTP on `fetch`, the envelope unwrapped to `data`, one
// error type, and what the server offers built in: waiting out 429s by
// `Retry-After`, retrying POSTs under one `Idempotency-Key`, `If-None-Match`
// on the resources that send an `ETag`, polling helpers that follow the
// server's hints, and page iterators. The operations themselves are
// generated (./generated/operations.js) from the OpenAPI document.

import { bindOperations } from "./generated/operations.js";
import { randomId } from "./crypto.js";

export const VERSION = "0.1.0";

/** The one error every failed call throws. */
export class AdvpsError extends Error {
  constructor(message, { status = 0, errors = null, requestId = null, rateLimit = null, retryAfter = null, body = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "AdvpsError";
    /** HTTP status; 0 when no answer came (network error, timeout, abort). */
    this.status = status;
    this.errors = errors;
    this.requestId = requestId;
    this.rateLimit = rateLimit;
    this.retryAfter = retryAfter;
    this.body = body;
  }
}

/** `waitForTask` / `waitForOrder` saw the work end without success. */
export class AdvpsOperationFailedError extends AdvpsError {
  constructor(message, result) {
    super(message, { status: 200 });
    this.name = "AdvpsOperationFailedError";
    /** The task's or order's last `data`. */
    this.result = result;
  }
}

/** `waitForTask` / `waitForOrder` ran out of time. */
export class AdvpsTimeoutError extends AdvpsError {
  constructor(message, result) {
    super(message, { status: 0 });
    this.name = "AdvpsTimeoutError";
    this.result = result;
  }
}

const DEFAULT_BASE_URL = "http://127.0.0.1:8080";
const TASK_DONE = new Set(["COMPLETED", "FAILED"]);
const ORDER_OK = new Set(["COMPLETED", "ASSIGNED"]);
const ORDER_FAILED = new Set(["FAILED", "CANCELLED", "REJECTED"]);
const ETAG_CACHE_SIZE = 256;

function headerInt(headers, name) {
  const raw = headers.get(name);
  if (raw == null || raw.trim() === "") return null;
  const n = Number(raw.trim());
  return Number.isFinite(n) ? n : null;
}

/** `RateLimit-*` headers as an object, or null when the answer has none. */
export function parseRateLimit(headers) {
  const limit = headerInt(headers, "ratelimit-limit");
  const remaining = headerInt(headers, "ratelimit-remaining");
  const reset = headerInt(headers, "ratelimit-reset");
  if (limit == null && remaining == null && reset == null) return null;
  const policy = headers.get("ratelimit-policy");
  return { limit, remaining, reset, policy: policy ?? null, at: Date.now() };
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function abortError(signal) {
  return new AdvpsError("The call was aborted", { cause: signal?.reason });
}

export class Advps {
  /**
   * @param {import("./client.js").AdvpsOptions} options
   */
  constructor(options = {}) {
    const env = typeof process !== "undefined" && process.env ? process.env : {};
    this.apiKey = options.apiKey ?? env.ADVPS_API_KEY;
    if (!this.apiKey) throw new AdvpsError("An API key is needed: pass apiKey or set ADVPS_API_KEY");
    this.baseUrl = String(options.baseUrl ?? env.ADVPS_BASE_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    if (!this.fetch) throw new AdvpsError("No fetch available: pass options.fetch");
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxRetries = options.maxRetries ?? 3;
    this.retryOnRateLimit = options.retryOnRateLimit ?? true;
    this.maxRetryWaitMs = options.maxRetryWaitMs ?? 60_000;
    this.idempotency = options.idempotency ?? true;
    this.conditionalRequests = options.conditionalRequests ?? true;
    this.headers = options.headers ?? {};
    /** The last `RateLimit-*` state the server reported, or null. */
    this.rateLimit = null;
    /** The last answer's request id (`X-Request-Id`). */
    this.lastRequestId = null;
    this._etags = new Map();
    Object.assign(this, bindOperations(this));
  }

  /** The raw answer of one operation: `{ data, status, headers }`. */
  async send(spec, options = {}) {
    const url = new URL(this.baseUrl + spec.path);
    for (const [k, v] of Object.entries(spec.query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    const headers = { accept: "application/json", "x-api-key": this.apiKey, ...this.headers, ...(options.headers ?? {}) };
    let payload;
    if (spec.body !== undefined && spec.body !== null) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(spec.body);
    }
    const isPost = spec.method === "POST";
    // One key per logical call, the same on each of its retries, so the
    // server runs the call once however often it is sent.
    let idempotencyKey = options.idempotencyKey;
    if (isPost && idempotencyKey === undefined && (options.idempotency ?? this.idempotency)) {
      idempotencyKey = await randomId();
    }
    if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
    const retryable = !isPost || Boolean(idempotencyKey);
    const cacheKey = url.toString();
    const conditional = spec.conditional && (options.conditional ?? this.conditionalRequests);
    const cached = conditional ? this._etags.get(cacheKey) : undefined;
    if (cached) headers["if-none-match"] = cached.etag;

    const maxRetries = options.maxRetries ?? this.maxRetries;
    const retryOnRateLimit = options.retryOnRateLimit ?? this.retryOnRateLimit;
    for (let attempt = 0; ; attempt++) {
      const canRetry = retryable && attempt < maxRetries;
      let response;
      try {
        response = await this._fetchOnce(url, { method: spec.method, headers, body: payload }, options);
      } catch (err) {
        if (options.signal?.aborted) throw abortError(options.signal);
        if (canRetry) {
          await sleep(Math.min(250 * 2 ** attempt, 5000), options.signal);
          continue;
        }
        throw err instanceof AdvpsError ? err : new AdvpsError(`Request failed: ${err?.message ?? err}`, { cause: err });
      }
      const rateLimit = parseRateLimit(response.headers);
      if (rateLimit) this.rateLimit = rateLimit;
      const requestId = response.headers.get("x-request-id");
      if (requestId) this.lastRequestId = requestId;
      if (response.status === 304 && cached) {
        return { data: cached.data, status: 304, headers: response.headers };
      }
      const text = response.text;
      let body = null;
      try {
        body = text ? JSON.parse(text) : null;
      } catch {
        body = null;
      }
      if (response.ok) {
        const data = body && typeof body === "object" && "data" in body ? body.data : body;
        const etag = response.headers.get("etag");
        if (conditional && etag) this._remember(cacheKey, etag, data);
        return { data, status: response.status, headers: response.headers };
      }
      const retryAfter = headerInt(response.headers, "retry-after");
      const waitable = response.status === 429 ? retryOnRateLimit : response.status === 503;
      if (waitable && canRetry && retryAfter != null && retryAfter * 1000 <= this.maxRetryWaitMs) {
        await sleep(retryAfter * 1000, options.signal);
        continue;
      }
      const message = (body && typeof body.message === "string" && body.message) || `HTTP ${response.status}`;
      throw new AdvpsError(message, {
        status: response.status,
        errors: body?.errors ?? null,
        requestId,
        rateLimit,
        retryAfter,
        body,
      });
    }
  }

  /** One operation's `data`. Used by the generated methods. */
  async request(spec, options) {
    return (await this.send(spec, options)).data;
  }

  /** Every item of a page-numbered list, page after page. */
  async *paginate(call, itemsKey, query = {}, options = {}) {
    for (let page = 1; ; page++) {
      const data = await call({ ...query, page }, options);
      yield* data[itemsKey] ?? [];
      if (!data.pagination?.hasNext) return;
    }
  }

  _remember(key, etag, data) {
    this._etags.delete(key);
    this._etags.set(key, { etag, data });
    if (this._etags.size > ETAG_CACHE_SIZE) this._etags.delete(this._etags.keys().next().value);
  }

  async _fetchOnce(url, init, options) {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const controller = new AbortController();
    const onAbort = () => controller.abort(options.signal.reason);
    if (options.signal) {
      if (options.signal.aborted) throw abortError(options.signal);
      options.signal.addEventListener("abort", onAbort, { once: true });
    }
    const timer = setTimeout(() => controller.abort(new Error("timeout")), timeoutMs);
    try {
      const response = await this.fetch(url, { ...init, signal: controller.signal });
      // The body is read under the same deadline.
      const text = await response.text();
      return { status: response.status, ok: response.ok, headers: response.headers, text };
    } catch (err) {
      if (controller.signal.aborted && !options.signal?.aborted) {
        throw new AdvpsError(`No answer within ${timeoutMs} ms`, { cause: err });
      }
      throw err;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Polls a task until it is COMPLETED (its `data`) or FAILED (throws
   * AdvpsOperationFailedError), waiting as the server's `Retry-After` says
   * and sending `If-None-Match`, so unchanged polls cost no quota.
   */
  async waitForTask(taskId, options = {}) {
    return this._poll(
      (o) =>
        this.send(
          { operationId: "getTaskStatus", method: "GET", path: `/api/v1/services/task/${encodeURIComponent(taskId)}/status`, conditional: true },
          o,
        ),
      (data) => {
        if (!TASK_DONE.has(data.status)) return false;
        if (data.status === "FAILED") throw new AdvpsOperationFailedError(`Task ${taskId} failed: ${data.error ?? "no reason given"}`, data);
        return true;
      },
      `task ${taskId}`,
      options,
    );
  }

  /** Polls an order until COMPLETED or ASSIGNED (its `data`); throws on FAILED, CANCELLED, REJECTED. */
  async waitForOrder(orderId, options = {}) {
    return this._poll(
      (o) => this.send({ operationId: "getOrder", method: "GET", path: `/api/v1/purchase/${encodeURIComponent(orderId)}`, conditional: true }, o),
      (data) => {
        const status = data.order?.status;
        if (ORDER_FAILED.has(status)) throw new AdvpsOperationFailedError(`Order ${orderId} is ${status}: ${data.order?.error ?? "no reason given"}`, data);
        return ORDER_OK.has(status);
      },
      `order ${orderId}`,
      options,
    );
  }

  async _poll(fetchOnce, done, what, options) {
    const timeoutMs = options.timeoutMs ?? 600_000;
    const fallbackMs = options.intervalMs ?? 2000;
    const deadline = Date.now() + timeoutMs;
    let last = null;
    for (;;) {
      const { data, headers } = await fetchOnce({ signal: options.signal, timeoutMs: options.requestTimeoutMs });
      last = data;
      if (done(data)) return data;
      const hint = headerInt(headers, "retry-after");
      const waitMs = hint != null ? hint * 1000 : fallbackMs;
      const left = deadline - Date.now();
      if (left <= 0) throw new AdvpsTimeoutError(`Gave up waiting for ${what} after ${timeoutMs} ms`, last);
      await sleep(Math.min(waitMs, left), options.signal);
    }
  }
}
