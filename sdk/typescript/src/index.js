// The package's entry point: the client, its errors and webhook verification.

export { Advps, AdvpsError, AdvpsOperationFailedError, AdvpsTimeoutError, VERSION, parseRateLimit } from "./client.js";
export { verifyWebhook, WebhookVerificationError } from "./webhooks.js";
export { OPERATIONS } from "./generated/operations.js";
