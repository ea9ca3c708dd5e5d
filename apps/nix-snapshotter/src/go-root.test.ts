import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { daemonEntry } from "./testing/daemon-process.js";

const run = promisify(execFile);

/**
 * The daemon on a root it must not take over: it exits with a message naming the file and what
 * to do, and changes nothing (systemd's Restart=always then restarts it into the same refusal,
 * never into a half-migrated root). The take-over itself: go-upgrade.e2e.test.ts and the
 * snapshotter's migration tests.
 */
describe.skipIf(!existsSync(daemonEntry))("the daemon on a Go root it cannot read", () => {
  let directory: string;

  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), "go-root-"));
  });

  afterEach(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  async function start(root: string): Promise<{ code: number; stderr: string }> {
    const config = join(directory, "config.toml");
    await writeFile(
      config,
      [
        `gc_roots_dir = ${JSON.stringify(join(directory, "gcroots-of-ours"))}`,
        "[image_service]",
        "enable = false",
        "",
      ].join("\n"),
    );
    const result = await run(
      process.execPath,
      [daemonEntry, "-c", config, "--root", root, "--address", join(directory, "daemon.sock")],
      { env: { ...process.env, NIX_SNAPSHOTTER_LOG_FORMAT: "json" } },
    ).then(
      ({ stderr }) => ({ code: 0, stderr }),
      (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
    );
    return result;
  }

  it("refuses a corrupt bolt metadata.db, naming it, and changes nothing", async () => {
    const root = join(directory, "root");
    await mkdir(join(root, "snapshots", "1", "fs"), { recursive: true });
    await mkdir(join(root, "gcroots", "1"), { recursive: true });
    // Two pages: bolt's magic number and version 2 in meta page 0, a checksum that does not match.
    const bytes = Buffer.alloc(8192, 0x5a);
    bytes.writeBigUInt64LE(0n, 0);
    bytes.writeUInt16LE(0x04, 8);
    bytes.writeUInt32LE(0xed0cdaed, 16);
    bytes.writeUInt32LE(2, 20);
    await writeFile(join(root, "metadata.db"), bytes);

    const { code, stderr } = await start(root);
    expect(code).toBe(1);
    const database = join(root, "metadata.db");
    expect(stderr).toContain(`bolt database ${database}`);
    expect(stderr).toMatch(/Nothing was changed\. Restore .*metadata\.db from a backup/);
    expect(await readFile(database)).toEqual(bytes);
    expect((await readdir(root)).sort()).toEqual(["gcroots", "metadata.db", "snapshots"]);
    expect(existsSync(join(directory, "gcroots-of-ours"))).toBe(false);
  });

  it("refuses snapshot directories without a database", async () => {
    const root = join(directory, "root");
    await mkdir(join(root, "snapshots", "7", "fs"), { recursive: true });
    const { code, stderr } = await start(root);
    expect(code).toBe(1);
    expect(stderr).toMatch(/has 1 snapshot directories but no .*metadata\.db/);
    expect((await readdir(root)).sort()).toEqual(["snapshots"]);
  });
});
