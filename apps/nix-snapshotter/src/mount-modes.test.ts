import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { defaultMountMode, mountModes, nixMountModes } from "@nix-snapshotter/snapshotter";
import { describe, expect, it } from "vitest";
import { ConfigError, defaultConfig, parseConfig } from "./config.js";

/**
 * The snapshotter's list of mount modes is the one place a mode is named: the daemon's config
 * reads it, and these checks keep what cannot import it (the NixOS module, the docs) in step.
 */
const repositoryRoot = join(import.meta.dirname, "..", "..", "..");
const names = nixMountModes.map((mode) => mode.name);

async function repositoryFile(path: string): Promise<string> {
  return readFile(join(repositoryRoot, path), "utf8");
}

/** The body of the first `mount_mode = mkOption { ... };` of a Nix file (balanced braces). */
function mountModeOption(nix: string): string {
  const start = nix.indexOf("mount_mode = mkOption {");
  expect(start).toBeGreaterThanOrEqual(0);
  let depth = 0;
  for (let index = nix.indexOf("{", start); index < nix.length; index++) {
    if (nix[index] === "{") depth++;
    if (nix[index] === "}" && --depth === 0) return nix.slice(start, index + 1);
  }
  throw new Error("mount_mode option not closed");
}

describe("mount modes, listed once", () => {
  it("the daemon serves the nix modes, bind by default; none stays a library mode", () => {
    expect(names).toEqual(["bind", "hardlink"]);
    expect(mountModes.map((mode) => mode.name)).toEqual(["bind", "hardlink", "none"]);
    expect(defaultConfig().mountMode).toBe(defaultMountMode);
    expect(defaultMountMode).toBe("bind");
    for (const mode of nixMountModes) {
      expect(mode.nixLayers).toBe(true);
      expect(mode.minimumContainerd).toMatch(/^\d+\.\d+$/);
    }
  });

  it("the config accepts each listed mode and names them all when refusing another", () => {
    for (const name of names) {
      expect(parseConfig(`mount_mode = ${JSON.stringify(name)}`, "a.toml").mountMode).toBe(name);
    }
    expect(() => parseConfig(`mount_mode = "none"`, "a.toml")).toThrow(ConfigError);
    expect(() => parseConfig(`mount_mode = "none"`, "a.toml")).toThrow(
      `"mount_mode" must be "bind" or "hardlink", got "none"`,
    );
  });

  it("nix/modules/common/lib.nix enumerates the same modes", async () => {
    const option = mountModeOption(await repositoryFile("nix/modules/common/lib.nix"));
    const enumeration = /types\.enum\s*\[([^\]]*)\]/.exec(option);
    expect(enumeration).not.toBeNull();
    const listed = [...enumeration![1]!.matchAll(/"([^"]*)"/g)].map((match) => match[1]);
    expect(listed).toEqual(names);
  });

  it("docs/configuration.md and docs/nix-interface.md list and describe each mode", async () => {
    const configuration = await repositoryFile("docs/configuration.md");
    const row = configuration.split("\n").find((line) => line.startsWith("| `mount_mode`"));
    expect(row).toBeDefined();
    const [, , type, defaultValue] = row!.split("|").map((cell) => cell.trim());
    expect([...type!.matchAll(/"([^"]*)"/g)].map((match) => match[1])).toEqual(names);
    expect(defaultValue).toBe(`\`${JSON.stringify(defaultMountMode)}\``);
    const section = configuration.slice(configuration.indexOf("### `mount_mode`"));
    for (const name of names) expect(section).toMatch(new RegExp(`^- \`${name}\``, "m"));

    const nixInterface = await repositoryFile("docs/nix-interface.md");
    const nixRow = nixInterface.split("\n").find((line) => line.startsWith("| `mount_mode`"));
    expect(nixRow).toBeDefined();
    const nixType = nixRow!.split("|")[2]!;
    expect([...nixType.matchAll(/"([^"]*)"/g)].map((match) => match[1])).toEqual(names);
  });

  it("docs/containerd.md has a row per mode", async () => {
    const containerd = await repositoryFile("docs/containerd.md");
    const rows = [...containerd.matchAll(/^\| `mount_mode = "([^"]*)"`/gm)].map(
      (match) => match[1],
    );
    expect(rows).toEqual(names);
  });
});
