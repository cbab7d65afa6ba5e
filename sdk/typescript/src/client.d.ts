// Types of client.js.

import type { Operations } from "./generated/operations.js";

export declare const VERSION: string;

export interface RateLimitState {
  /** Requests allowed per window. */
  limit: number | null;
  /** Requests left in the window. */
  remaining: number | null;
  /** Seconds until the window closes. */
  reset: number | null;
  /** `RateLimit-Policy` as sent, e.g. `"default";q=1000;w=900`. */
  policy: string | null;
  /** When it was read (ms since the epoch). */
  at: number;
}

export interface AdvpsOptions {
  /** `sk_test_...` or `sk_live_...`; default: `ADVPS_API_KEY` from the environment (Node). */
  apiKey?: string;
  /** Default: `ADVPS_BASE_URL`, else http://127.0.0.1:8080. */
  baseUrl?: string;
  /** A fetch implementation; default: the global one. */
  fetch?: typeof fetch;
  /** Deadline of one HTTP exchange; default 30 000. */
  timeoutMs?: number;
  /** Retries of one call (429, 503 with `Retry-After`, network errors); default 3. */
  maxRetries?: number;
  /** On 429, wait `Retry-After` and retry; default true. */
  retryOnRateLimit?: boolean;
  /** A longer `Retry-After` than this is not waited out; default 60 000. */
  maxRetryWaitMs?: number;
  /** Send a generated `Idempotency-Key` with every POST (and so allow retrying it); default true. */
  idempotency?: boolean;
  /** Send `If-None-Match` for resources that sent an `ETag` before; default true. */
  conditionalRequests?: boolean;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
}

export interface RequestOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Use this key instead of a generated one (POST only). */
  idempotencyKey?: string;
  idempotency?: boolean;
  conditional?: boolean;
  maxRetries?: number;
  retryOnRateLimit?: boolean;
  headers?: Record<string, string>;
}

export interface WaitOptions {
  /** Overall deadline; default 600 000 (10 min). */
  timeoutMs?: number;
  /** Wait between polls when the server gives no `Retry-After`; default 2000. */
  intervalMs?: number;
  /** Deadline of each poll. */
  requestTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface OperationSpec {
  operationId: string;
  method: string;
  path: string;
  query?: Record<string, unknown>;
  body?: unknown;
  conditional?: boolean;
}

export declare class AdvpsError extends Error {
  /** HTTP status; 0 when no answer came (network error, timeout, abort). */
  status: number;
  /** The envelope's `errors`: null or an object of details. */
  errors: Record<string, unknown> | null;
  requestId: string | null;
  rateLimit: RateLimitState | null;
  /** `Retry-After` in seconds, when sent. */
  retryAfter: number | null;
  /** The parsed error body. */
  body: unknown;
}

export declare class AdvpsOperationFailedError extends AdvpsError {
  result: any;
}

export declare class AdvpsTimeoutError extends AdvpsError {
  result: any;
}

export declare function parseRateLimit(headers: Headers): RateLimitState | null;

export interface Advps extends Operations {}

export declare class Advps {
  constructor(options?: AdvpsOptions);
  readonly baseUrl: string;
  /** The last `RateLimit-*` state the server reported, or null. */
  rateLimit: RateLimitState | null;
  /** The last answer's `X-Request-Id`. */
  lastRequestId: string | null;
  send(spec: OperationSpec, options?: RequestOptions): Promise<{ data: any; status: number; headers: Headers }>;
  request(spec: OperationSpec, options?: RequestOptions): Promise<any>;
  paginate<T>(call: (query: any, options?: RequestOptions) => Promise<any>, itemsKey: string, query?: object, options?: RequestOptions): AsyncIterable<T>;
  /** Resolves with the COMPLETED task; throws AdvpsOperationFailedError on FAILED, AdvpsTimeoutError past the deadline. */
  waitForTask(taskId: string, options?: WaitOptions): Promise<import("./generated/types.js").Data_TaskData>;
  /** Resolves when the order is COMPLETED or ASSIGNED; throws AdvpsOperationFailedError on FAILED, CANCELLED or REJECTED. */
  waitForOrder(orderId: string, options?: WaitOptions): Promise<import("./generated/types.js").Data_OrderResponse>;
}
