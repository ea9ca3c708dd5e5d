import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { daemonNodeFlags } from "./node-flags.js";

/**
 * The daemon's Node flags are listed once (node-flags.ts); these checks keep the launchers that
 * cannot import the list (the Nix wrapper, the demo, the manual install's wrapper) in step.
 */
const repositoryRoot = join(import.meta.dirname, "..", "..", "..");
const flags = daemonNodeFlags.join(" ");
const entry = "apps/nix-snapshotter/dist/main.js";

async function repositoryFile(path: string): Promise<string> {
  return readFile(join(repositoryRoot, path), "utf8");
}

/** The lines of a file that start the daemon's entry point. */
function launchLines(text: string): string[] {
  return text.split("\n").filter((line) => line.includes(entry));
}

describe("the daemon's Node flags, listed once", () => {
  it("names at least one flag, each a Node option", () => {
    expect(daemonNodeFlags.length).toBeGreaterThan(0);
    for (const flag of daemonNodeFlags) expect(flag).toMatch(/^--[a-z][a-z0-9-]*(=[^\s]+)?$/);
  });

  it("nix/package.nix gives them to the daemon's wrapper only", async () => {
    const nix = await repositoryFile("nix/package.nix");
    expect(nix).toContain(`if [ "$app" = nix-snapshotter ]; then node_flags="${flags} "; fi`);
    expect(nix).toContain('--add-flags "$node_flags$lib_dir/apps/$app/dist/main.js"');
  });

  it("the demo starts the daemon with them", async () => {
    const lines = launchLines(await repositoryFile("scripts/demo"));
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(line).toContain(`node ${flags} "$repo/${entry}"`);
  });

  it("the manual install's wrapper starts the daemon with them", async () => {
    const lines = launchLines(await repositoryFile("docs/install-manual.md"));
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines)
      expect(line).toContain(`exec %s ${flags} /opt/nix-snapshotter/${entry}`);
  });
});
