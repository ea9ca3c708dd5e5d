import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { daemonEntry } from "./testing/daemon-process.js";
import { daemonVersion } from "./version.js";

const run = promisify(execFile);
const packageJson = join(import.meta.dirname, "..", "package.json");

describe("daemonVersion", () => {
  it("is the version of the app's package.json", async () => {
    const { version } = JSON.parse(await readFile(packageJson, "utf8")) as { version: string };
    expect(daemonVersion()).toBe(version);
    expect(version).not.toBe("0.0.0");
  });

  it("refuses a package.json without a valid version", async () => {
    const directory = await mkdtemp(join(tmpdir(), "version-"));
    try {
      const file = join(directory, "package.json");
      await writeFile(file, JSON.stringify({ version: "x" }));
      expect(() => daemonVersion(pathToFileURL(file))).toThrow(/no valid "version"/);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!existsSync(daemonEntry))("nix-snapshotter --version (built)", () => {
  it.each(["--version", "-v"])("%s prints the package version and exits 0", async (flag) => {
    const { version } = JSON.parse(await readFile(packageJson, "utf8")) as { version: string };
    const { stdout } = await run(process.execPath, [daemonEntry, flag]);
    expect(stdout.trim()).toBe(version);
  });
});
