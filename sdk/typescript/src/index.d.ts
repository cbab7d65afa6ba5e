// Types of the package's entry point.

export {
  Advps,
  AdvpsError,
  AdvpsOperationFailedError,
  AdvpsTimeoutError,
  VERSION,
  parseRateLimit,
} from "./client.js";
export type { AdvpsOptions, RequestOptions, WaitOptions, RateLimitState, OperationSpec } from "./client.js";
export { verifyWebhook, WebhookVerificationError } from "./webhooks.js";
export { OPERATIONS } from "./generated/operations.js";
export type { Operations } from "./generated/operations.js";
export type * from "./generated/types.js";
