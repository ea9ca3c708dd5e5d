import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { createIdleCollector } from "./idle-collector.js";

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A logger that records the messages of its debug lines. */
function recordingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: "debug" },
    {
      write(line: string) {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );
  return {
    logger,
    collections: () => lines.filter((line) => line.msg === "quiet: full garbage collection"),
  };
}

describe("idle collector", () => {
  it("runs one full collection once calls stop, never while one runs", async () => {
    const { logger, collections } = recordingLogger();
    const collector = createIdleCollector({ idleMs: 50, logger });
    try {
      collector.begin();
      await delay(150);
      expect(collections()).toHaveLength(0); // a call is still running
      // Garbage the collection can free.
      let garbage: unknown[] = Array.from({ length: 200_000 }, (_, index) => ({ index }));
      garbage = [];
      expect(garbage).toHaveLength(0);
      collector.end();
      await delay(300);
      expect(collections()).toHaveLength(1);
      const [line] = collections();
      expect(Number(line!.heapUsedAfter)).toBeLessThan(Number(line!.heapUsedBefore));
      await delay(200);
      expect(collections()).toHaveLength(1); // once per quiet period
      collector.begin();
      collector.end();
      await delay(300);
      expect(collections()).toHaveLength(2);
    } finally {
      collector.stop();
    }
  });

  it("does nothing when disabled", async () => {
    const { logger, collections } = recordingLogger();
    const collector = createIdleCollector({ idleMs: 0, logger });
    collector.begin();
    collector.end();
    await delay(100);
    expect(collections()).toHaveLength(0);
    collector.stop();
  });
});
