import { performance } from "node:perf_hooks";

/**
 * Wall-clock time with sub-millisecond resolution. containerd keeps snapshot timestamps in
 * nanoseconds and its test suite checks them against the caller's own clock (a snapshot created
 * between t1 and t2 must have t1 <= created <= t2), so milliseconds are not enough.
 *
 * `Date.now()` is not usable for that: measured here, its ticks lag the monotonic clock by up to
 * about a millisecond (it follows the kernel's coarse clock). `performance.timeOrigin` is the
 * precise wall-clock time (microseconds) of the process start on the monotonic clock's scale, so
 * monotonic time plus that offset is the wall clock to a microsecond, give or take NTP slewing
 * since start. When it disagrees with `Date.now()` by more than a few milliseconds (the wall
 * clock was stepped, or the machine was suspended), it is re-anchored on `Date.now()`.
 */

let offset: bigint | undefined;
let last = 0n;

function anchorOnTimeOrigin(): bigint {
  const wall = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
  offset = wall - process.hrtime.bigint();
  return offset;
}

function anchorOnDateNow(): bigint {
  // Date.now() is the millisecond floor of a clock that may lag; the middle of the next
  // millisecond is the best guess.
  offset = BigInt(Date.now()) * 1_000_000n + 500_000n - process.hrtime.bigint();
  return offset;
}

/** Nanoseconds since the Unix epoch (microsecond resolution), never decreasing. */
export function nowNanoseconds(): bigint {
  let current = process.hrtime.bigint() + (offset ?? anchorOnTimeOrigin());
  const wall = BigInt(Date.now()) * 1_000_000n;
  if (current < wall - 5_000_000n || current > wall + 5_000_000n) {
    current = process.hrtime.bigint() + anchorOnDateNow();
  }
  if (current <= last) current = last + 1n;
  last = current;
  return current;
}

/**
 * A Date that remembers the nanoseconds below its millisecond (`Date` keeps milliseconds only).
 * It behaves as a Date everywhere; `nanosecondsOf` reads the full value.
 */
export class PreciseDate extends Date {
  /** 0..999,999: nanoseconds within the millisecond of `getTime()`. */
  readonly subMillisecondNanos: number;

  constructor(nanoseconds: bigint) {
    const milliseconds = nanoseconds / 1_000_000n;
    super(Number(milliseconds));
    this.subMillisecondNanos = Number(nanoseconds - milliseconds * 1_000_000n);
  }
}

/** Nanoseconds since the epoch of any Date (a PreciseDate keeps its sub-millisecond part). */
export function nanosecondsOf(date: Date): bigint {
  const base = BigInt(date.getTime()) * 1_000_000n;
  return date instanceof PreciseDate ? base + BigInt(date.subMillisecondNanos) : base;
}

/** A Date as protobuf `Timestamp` fields (`seconds`, `nanos`), keeping nanoseconds. */
export function timestampParts(date: Date): { seconds: bigint; nanos: number } {
  const nanoseconds = nanosecondsOf(date);
  let seconds = nanoseconds / 1_000_000_000n;
  let nanos = nanoseconds - seconds * 1_000_000_000n;
  if (nanos < 0n) {
    seconds -= 1n;
    nanos += 1_000_000_000n;
  }
  return { seconds, nanos: Number(nanos) };
}

/** The inverse of timestampParts. */
export function dateFromTimestampParts(parts: { seconds: bigint; nanos: number }): PreciseDate {
  return new PreciseDate(parts.seconds * 1_000_000_000n + BigInt(parts.nanos));
}
