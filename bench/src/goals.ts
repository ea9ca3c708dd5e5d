/**
 * The goals that issue #18 sets for figures of `pnpm bench`, as the least advantage each must
 * reach, and the heading of docs/benchmarks/where-the-time-goes.md that explains a figure still
 * short of it. One list: the report, the README table and the tests read it.
 */
import type { Figure } from "./harness.js";

export interface Goal {
  section: string;
  /** Which figures of the section the goal applies to. */
  figure: RegExp;
  /** Least advantage (see report.ts `advantage`): 1 means as good as the baseline. */
  advantage: number;
  /** Heading of docs/benchmarks/where-the-time-goes.md that says where the time goes. */
  notes: string;
}

/** Section titles (the benches export the same strings; kept literal so this module is light). */
export const goalSections = {
  image: "Image generation vs tar | gzip",
  start: "Container start time vs closure size",
  proxy: "Snapshot op cycles over the proxy API vs Go overlay",
} as const;

export const goals: readonly Goal[] = [
  {
    section: goalSections.proxy,
    figure: /, concurrency (1|8)$/,
    advantage: 1,
    notes: "Snapshot cycles over the proxy API (goal >= 1.0x the Go overlay reference)",
  },
  {
    section: goalSections.start,
    figure: /^(1001|5001) paths, hardlink mode$/,
    advantage: 0.9,
    notes: "Container start in hardlink mode (goal >= 0.9x layered at 1,001 and 5,001 paths)",
  },
  {
    section: goalSections.image,
    figure: /^image, /,
    advantage: 1,
    notes: "Image generation (goal >= 1.0x `tar | gzip` at 100, 1,000 and 10,000 paths)",
  },
];

/** The goal of a figure, if the issue sets one. */
export function goalOf(figure: Pick<Figure, "section" | "figure">): Goal | undefined {
  return goals.find((goal) => goal.section === figure.section && goal.figure.test(figure.figure));
}

/** GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens. */
export function headingAnchor(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}
