/** When and how long to wait before retrying a failed request. */
export interface RetryPolicy {
  /** Attempts in total, the first included (default 5). */
  attempts: number;
  /** Delay before the first retry in milliseconds (default 250). */
  baseDelay: number;
  /** Upper bound of one delay, `Retry-After` included, in milliseconds (default 30 s). */
  maxDelay: number;
}

export const defaultRetryPolicy: RetryPolicy = { attempts: 5, baseDelay: 250, maxDelay: 30_000 };

/** Network error codes that mean "try again": the request may not have been seen at all. */
const transientErrorCodes = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "UND_ERR_SOCKET",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/** True when a response status is worth retrying: 429, 500, 502, 503, 504 (never other 4xx). */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

/** True when a thrown network error is transient (connection reset, refused, timed out...). */
export function isRetryableError(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && transientErrorCodes.has(code)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * Parses a `Retry-After` header: delta seconds or an HTTP date. Returns milliseconds from `now`,
 * or undefined when absent or malformed.
 */
export function parseRetryAfter(
  value: string | undefined | null,
  now: number = Date.now(),
): number | undefined {
  if (value === undefined || value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  // An HTTP date names its day and month; Date.parse alone would also take "-5" as a year.
  if (!/[A-Za-z]{3}/.test(trimmed)) return undefined;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * Delay before retry number `retry` (0 for the first retry): exponential from `baseDelay`, with
 * "equal jitter" (half fixed, half random), capped at `maxDelay`. A server's `Retry-After`
 * replaces it (capped too).
 */
export function retryDelay(
  policy: RetryPolicy,
  retry: number,
  retryAfter?: number,
  random: () => number = Math.random,
): number {
  if (retryAfter !== undefined) return Math.min(policy.maxDelay, retryAfter);
  const exponential = Math.min(policy.maxDelay, policy.baseDelay * 2 ** retry);
  return exponential / 2 + random() * (exponential / 2);
}
