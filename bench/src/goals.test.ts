import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startSection } from "./container-start.js";
import { goalOf, goalSections, goals, headingAnchor } from "./goals.js";
import { repositoryRoot } from "./harness.js";
import { proxyCyclesSection } from "./proxy-cycles.js";

describe("goals", () => {
  it("name the sections the benches write", () => {
    expect(goalSections.start).toBe(startSection);
    expect(goalSections.proxy).toBe(proxyCyclesSection);
  });

  it("apply to the figures the issue names and to no other", () => {
    const proxy = goalSections.proxy;
    expect(goalOf({ section: proxy, figure: "300 cycles, concurrency 1" })?.advantage).toBe(1);
    expect(goalOf({ section: proxy, figure: "600 cycles, concurrency 8" })?.advantage).toBe(1);
    const start = goalSections.start;
    expect(goalOf({ section: start, figure: "1001 paths, hardlink mode" })?.advantage).toBe(0.9);
    expect(goalOf({ section: start, figure: "5001 paths, hardlink mode" })?.advantage).toBe(0.9);
    expect(goalOf({ section: start, figure: "101 paths, hardlink mode" })).toBeUndefined();
    expect(goalOf({ section: start, figure: "5001 paths, bind mode" })).toBeUndefined();
    const image = goalSections.image;
    for (const count of [100, 1000, 10000])
      expect(goalOf({ section: image, figure: `image, ${count} paths` })?.advantage).toBe(1);
    expect(goalOf({ section: image, figure: "layer size, 100 paths" })).toBeUndefined();
  });

  it("link to headings that exist in docs/benchmarks/where-the-time-goes.md", async () => {
    const notes = await readFile(
      join(repositoryRoot, "docs", "benchmarks", "where-the-time-goes.md"),
      "utf8",
    );
    const anchors = new Set(
      notes
        .split("\n")
        .filter((line) => line.startsWith("#"))
        .map((line) => headingAnchor(line.replace(/^#+\s*/, ""))),
    );
    for (const goal of goals) expect(anchors).toContain(headingAnchor(goal.notes));
  });
});

describe("headingAnchor", () => {
  it("spells GitHub's anchors", () => {
    expect(headingAnchor("Image generation (goal >= 1.0x `tar | gzip` at 100, 1,000 paths)")).toBe(
      "image-generation-goal--10x-tar--gzip-at-100-1000-paths",
    );
  });
});
