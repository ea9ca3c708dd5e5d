import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { nowNanoseconds } from "./clock.js";

// The system clock with nanoseconds, read by date(1) (clock_gettime(CLOCK_REALTIME)), must fall
// between two readings of ours taken around it: that is the ordering containerd's test suite
// checks between its own clock and the timestamps the snapshotter returns.
describe("nowNanoseconds against the system clock", () => {
  it("brackets date +%s%N", () => {
    for (let index = 0; index < 100; index++) {
      const before = nowNanoseconds();
      const system = BigInt(execFileSync("date", ["+%s%N"]).toString().trim());
      const after = nowNanoseconds();
      expect(system >= before && system <= after).toBe(true);
    }
  });
});
