// Types of webhooks.js.

export declare class WebhookVerificationError extends Error {}

export declare function verifyWebhook<T = any>(
  secret: string | string[],
  headers: Headers | Record<string, string | string[] | undefined>,
  body: string | Uint8Array,
  options?: { toleranceSeconds?: number; now?: Date },
): Promise<T>;
