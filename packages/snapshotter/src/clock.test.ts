import { describe, expect, it } from "vitest";
import {
  dateFromTimestampParts,
  nanosecondsOf,
  nowNanoseconds,
  PreciseDate,
  timestampParts,
} from "./clock.js";

describe("nowNanoseconds", () => {
  it("agrees with Date.now() and never goes back", () => {
    let previous = 0n;
    for (let index = 0; index < 10_000; index++) {
      // Date.now() truncates to the millisecond and lags (see clock.ts): allow a few.
      const before = BigInt(Date.now() - 5) * 1_000_000n;
      const now = nowNanoseconds();
      const after = BigInt(Date.now() + 6) * 1_000_000n;
      expect(now >= before && now <= after).toBe(true);
      expect(now >= previous).toBe(true);
      previous = now;
    }
  });

  it("has sub-millisecond resolution", () => {
    const values = new Set<bigint>();
    for (let index = 0; index < 1000; index++) values.add(nowNanoseconds() % 1_000_000n);
    expect(values.size).toBeGreaterThan(10);
  });
});

describe("PreciseDate", () => {
  it("keeps nanoseconds and behaves as a Date", () => {
    const date = new PreciseDate(1_700_000_000_123_456_789n);
    expect(date.getTime()).toBe(1_700_000_000_123);
    expect(date.toISOString()).toBe("2023-11-14T22:13:20.123Z");
    expect(nanosecondsOf(date)).toBe(1_700_000_000_123_456_789n);
    expect(nanosecondsOf(new Date(5))).toBe(5_000_000n);
  });

  it("converts to and from protobuf Timestamp fields", () => {
    const date = new PreciseDate(1_700_000_000_123_456_789n);
    expect(timestampParts(date)).toEqual({ seconds: 1_700_000_000n, nanos: 123_456_789 });
    expect(nanosecondsOf(dateFromTimestampParts(timestampParts(date)))).toBe(
      1_700_000_000_123_456_789n,
    );
    expect(timestampParts(new Date(-1))).toEqual({ seconds: -1n, nanos: 999_000_000 });
  });
});
