import { describe, expect, it } from "vitest";
import { goalSections } from "./goals.js";
import type { Figure } from "./harness.js";
import {
  advantage,
  formatValue,
  type Report,
  renderMarkdown,
  renderReadmeFigures,
  renderStartPlot,
} from "./report.js";

const section = { title: "Example", description: "ours vs theirs", source: "`x.ts`" };

function report(figures: Figure[], missing: Report["missing"] = []): Report {
  return {
    sections: [section],
    figures,
    missing,
    environment: [["node", "v24"]],
    durationSeconds: 12.4,
    command: "pnpm bench",
  };
}

describe("advantage", () => {
  it("is baseline / ours for times and bytes, ours / baseline for rates", () => {
    expect(advantage({ section: "s", figure: "f", ours: 10, baseline: 40, unit: "ms" })).toBe(4);
    expect(advantage({ section: "s", figure: "f", ours: 100, baseline: 50, unit: "bytes" })).toBe(
      0.5,
    );
    expect(advantage({ section: "s", figure: "f", ours: 30, baseline: 60, unit: "cycles/s" })).toBe(
      0.5,
    );
  });
});

describe("formatValue", () => {
  it("picks a unit a person reads at once", () => {
    expect(formatValue(2320.4, "ms")).toBe("2.32 s");
    expect(formatValue(475.2, "ms")).toBe("475 ms");
    expect(formatValue(7.06, "ms")).toBe("7.1 ms");
    expect(formatValue(0.1184, "ms")).toBe("0.118 ms");
    expect(formatValue(7351630, "bytes")).toBe("7,351,630 B");
    expect(formatValue(17.6, "cycles/s")).toBe("18/s");
  });
});

describe("renderMarkdown", () => {
  it("writes the machine table, the section and one row per figure", () => {
    const text = renderMarkdown(
      report([{ section: "Example", figure: "100 paths", ours: 100, baseline: 3880, unit: "ms" }]),
    );
    expect(text).toContain("| node | v24 |");
    expect(text).toContain("| duration of the run | 12 s |");
    expect(text).toContain("## Example\n\nours vs theirs\n\nMeasured by `x.ts`.");
    expect(text).toContain("| 100 paths | 100 ms | 3.88 s | 39x |  |");
  });

  it("writes a failed benchmark as not measured, with its reason and no number", () => {
    const text = renderMarkdown(
      report([], [{ section: "Example", figure: "all", reason: "containerd 1.7 missing" }]),
    );
    expect(text).toContain("| all | not measured yet: containerd 1.7 missing | | | |");
    expect(
      renderReadmeFigures(report([], [{ section: "Example", figure: "all", reason: "x" }])),
    ).toContain("| Example | all | not measured yet | | | |");
  });

  it("escapes pipes in names so that a row keeps its columns", () => {
    const text = renderMarkdown(
      report([{ section: "Example", figure: "tar | gzip", ours: 1, baseline: 2, unit: "ms" }]),
    );
    const row = text.split("\n").find((line) => line.includes("gzip"))!;
    expect(row).toContain("tar \\| gzip");
    expect(row.replaceAll("\\|", "").split("|")).toHaveLength(7);
  });
});

describe("goals in the report", () => {
  const image = goalSections.image;
  const figures: Figure[] = [
    { section: image, figure: "image, 100 paths", ours: 5, baseline: 10, unit: "ms" },
    {
      section: image,
      figure: "image, 10000 paths",
      ours: 250,
      baseline: 200,
      unit: "ms",
      note: "ours faster in 3 of 15",
    },
    { section: image, figure: "layer size, 100 paths", ours: 99, baseline: 100, unit: "bytes" },
  ];
  const withImage = (plot?: string): Report => ({
    ...report(figures),
    sections: [{ ...section, title: image }],
    ...(plot === undefined ? {} : { plot }),
  });

  it("writes each figure's goal and one line per figure short of it, with the notes' link", () => {
    const text = renderMarkdown(withImage());
    expect(text).toContain("| image, 100 paths | 5.0 ms | 10 ms | 2.00x | >= 1.0x |");
    expect(text).toContain("| image, 10000 paths | 250 ms | 200 ms | 0.80x | >= 1.0x |");
    expect(text).toContain("| layer size, 100 paths | 99 B | 100 B | 1.01x |  |");
    expect(text).toContain("- image, 10000 paths: ours faster in 3 of 15.");
    const short = text.split("\n").filter((line) => line.startsWith("- Short of its goal"));
    expect(short).toHaveLength(1);
    expect(short[0]).toContain("image, 10000 paths: 0.80x (goal >= 1.0x)");
    expect(short[0]).toContain(
      "(benchmarks/where-the-time-goes.md#image-generation-goal--10x-tar--gzip-at-100-1000-and-10000-paths)",
    );
  });

  it("gives the README the goals, the short lines and the plot", () => {
    const text = renderReadmeFigures(withImage("benchmarks/start-time.svg"));
    expect(text).toContain("| 0.80x | >= 1.0x |");
    expect(text).toContain("(docs/benchmarks/where-the-time-goes.md#image-generation-");
    expect(text).toContain(
      "![Container start time vs closure size](docs/benchmarks/start-time.svg)",
    );
    expect(renderReadmeFigures(withImage())).not.toContain("start-time.svg");
  });
});

describe("renderStartPlot", () => {
  const points = [
    { paths: 11, bindMs: 232, hardlinkMs: 240, layeredMs: 197 },
    { paths: 5001, bindMs: 2320, hardlinkMs: 475, layeredMs: 258 },
    { paths: 101, bindMs: 305, hardlinkMs: 230, layeredMs: 224 },
  ];

  it("draws one polyline per series through every point, sorted by size", () => {
    const svg = renderStartPlot(points, "2 cores");
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg.trim().endsWith("</svg>")).toBe(true);
    const lines = [...svg.matchAll(/<polyline[^>]* points="([^"]+)"/g)].map((match) =>
      match[1]!.split(" ").map((pair) => pair.split(",").map(Number) as [number, number]),
    );
    expect(lines).toHaveLength(3);
    for (const line of lines) {
      expect(line).toHaveLength(3);
      const xs = line.map(([x]) => x);
      expect(xs).toEqual([...xs].sort((a, b) => a - b));
    }
    // Bind mode at 5,001 paths is the highest point: the smallest y.
    const bind = lines[0]!;
    expect(Math.min(...lines.flat().map(([, y]) => y))).toBe(bind[2]![1]);
  });

  it("escapes the subtitle", () => {
    const svg = renderStartPlot(points, "<script>&");
    expect(svg).toContain("&lt;script&gt;&amp;");
    expect(svg).not.toContain("<script>");
  });
});
