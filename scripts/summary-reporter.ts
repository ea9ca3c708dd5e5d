import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { relative } from "node:path";
import type { Reporter, TestModule } from "vitest/node";

/** What one test run wrote to `NIX_SNAPSHOTTER_TEST_SUMMARY` (read by scripts/test-matrix.sh). */
export interface RunSummary {
  /** `nix-store --version`'s number (`2.8.0`), or `none` when no Nix was found. */
  nix: string;
  /** `daemon` with NIX_REMOTE=daemon, else `single-user` (the local store, no daemon). */
  store: "daemon" | "single-user";
  /** Where it ran: NIX_SNAPSHOTTER_SUITE (set inside a suite root), else `host`. */
  where: string;
  passed: number;
  failed: number;
  skipped: number;
}

function nixVersion(): string {
  try {
    const text = execFileSync("nix-store", ["--version"], {
      encoding: "utf8",
      timeout: 10_000,
      stdio: ["ignore", "pipe", "ignore"],
    });
    return /\)\s+(\d+\.\d+(?:\.\d+)?)/.exec(text)?.[1] ?? "unknown";
  } catch {
    return "none";
  }
}

const maxListed = 20;

/** One failed test on one line: its file, its name, the first line of its first error. */
function failureLine(file: string, name: string, message: string | undefined): string {
  const first = (message ?? "no error message").split("\n", 1)[0] ?? "";
  const plain = first.replace(/\u001b\[[0-9;]*m/g, "").trim();
  const text = `failed test: ${file} > ${name}: ${plain}`;
  return text.length > 400 ? `${text.slice(0, 399)}…` : text;
}

// Prints one plain closing line, "N passed, N failed, N skipped", after the default reporter's
// output, so that whoever reads the end of a CI log sees the totals over every project; the line
// before it names the Nix the run used, and before that comes one line per failed test ("failed
// test: file > name: first line of the error", at most 20), which .ci/run repeats at its very
// end. With NIX_SNAPSHOTTER_TEST_SUMMARY set, it also writes the figures as JSON to that file,
// for scripts/test-matrix.sh's closing lines.
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const failures: string[] = [];
    for (const testModule of testModules) {
      const file = relative(process.cwd(), testModule.moduleId);
      for (const test of testModule.children.allTests()) {
        const result = test.result();
        if (result.state === "passed") passed++;
        else if (result.state === "failed") {
          failed++;
          failures.push(failureLine(file, test.fullName, result.errors?.[0]?.message));
        } else skipped++;
      }
      if (testModule.state() === "failed" && testModule.children.size === 0) {
        failed++;
        failures.push(failureLine(file, "(the file)", testModule.errors()[0]?.message));
      }
    }
    // Read from the test run's environment (not a build input: nothing for turbo to hash).
    const env: NodeJS.ProcessEnv = process.env;
    const summary: RunSummary = {
      nix: nixVersion(),
      store: env.NIX_REMOTE === "daemon" ? "daemon" : "single-user",
      where: env.NIX_SNAPSHOTTER_SUITE || "host",
      passed,
      failed,
      skipped,
    };
    const file = env.NIX_SNAPSHOTTER_TEST_SUMMARY;
    if (file) writeFileSync(file, `${JSON.stringify(summary)}\n`);
    const listed = failures.slice(0, maxListed);
    if (failures.length > maxListed)
      listed.push(`failed test: … and ${failures.length - maxListed} more`);
    process.stdout.write(
      `${listed.length > 0 ? `\n${listed.join("\n")}\n` : ""}\nnix ${summary.nix} (${summary.where}, ${summary.store})\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`,
    );
  }
}
