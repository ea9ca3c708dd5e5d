import { describe, expect, it } from "vitest";
import {
  defaultRetryPolicy,
  isRetryableError,
  isRetryableStatus,
  parseRetryAfter,
  retryDelay,
} from "./retry.js";

describe("retry policy", () => {
  it("retries 429 and 5xx gateways, never other 4xx", () => {
    expect([429, 500, 502, 503, 504].map(isRetryableStatus)).toEqual([
      true,
      true,
      true,
      true,
      true,
    ]);
    expect([400, 401, 403, 404, 405, 409, 413, 501].map(isRetryableStatus)).toEqual(
      Array(8).fill(false),
    );
  });

  it("retries transient network errors, also when wrapped as a cause", () => {
    const reset = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    expect(isRetryableError(reset)).toBe(true);
    expect(isRetryableError(new TypeError("fetch failed", { cause: reset }))).toBe(true);
    expect(isRetryableError(Object.assign(new Error("x"), { code: "ENOTFOUND" }))).toBe(false);
    expect(isRetryableError(new Error("plain"))).toBe(false);
    expect(isRetryableError("string")).toBe(false);
  });

  it("parses Retry-After as seconds or an HTTP date, rejecting garbage", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(parseRetryAfter("7", now)).toBe(7000);
    expect(parseRetryAfter(" 0 ", now)).toBe(0);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("Wed, 31 Dec 2025 00:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("-5", now)).toBeUndefined();
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it("backs off exponentially with bounded jitter and honours Retry-After up to the cap", () => {
    const policy = { ...defaultRetryPolicy, baseDelay: 100, maxDelay: 1000 };
    expect(retryDelay(policy, 0, undefined, () => 0)).toBe(50);
    expect(retryDelay(policy, 0, undefined, () => 1)).toBe(100);
    expect(retryDelay(policy, 2, undefined, () => 0)).toBe(200);
    expect(retryDelay(policy, 2, undefined, () => 1)).toBe(400);
    expect(retryDelay(policy, 20, undefined, () => 1)).toBe(1000);
    expect(retryDelay(policy, 0, 5000)).toBe(1000);
    expect(retryDelay(policy, 3, 0)).toBe(0);
  });
});
