import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, open, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { testImageArchive, writeGzipBomb } from "@nix-snapshotter/oci/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * `nix2container inspect` run as a process on hostile archives (issue 14): each is refused with
 * an error naming the bound, and the process's peak RSS (GNU time's maximum resident set size)
 * stays under 256 MB.
 */

const execFileAsync = promisify(execFile);
const cli = fileURLToPath(new URL("../../dist/main.js", import.meta.url));
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const skip = !existsSync(cli)
  ? "the CLI is not built"
  : !existsSync("/usr/bin/time")
    ? "GNU time is not installed"
    : "";

/** Runs `inspect` under GNU time: exit code, stderr (without time's line) and peak RSS. */
async function inspect(path: string) {
  const result = await execFileAsync(
    "/usr/bin/time",
    ["-f", "maxrss=%M", process.execPath, cli, "inspect", path],
    {
      maxBuffer: 16 * MiB,
    },
  ).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({
      code: error.code,
      stdout: error.stdout,
      stderr: error.stderr,
    }),
  );
  const match = /maxrss=(\d+)/.exec(result.stderr);
  if (match === null) throw new Error(`no maxrss in ${result.stderr}`);
  return {
    code: result.code,
    stdout: result.stdout,
    stderr: result.stderr.replace(/maxrss=\d+\n?/, ""),
    peakRss: Number(match[1]) * 1024,
  };
}

describe.skipIf(skip !== "")(`nix2container inspect on hostile archives ${skip}`, () => {
  let work: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "inspect-e2e-"));
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("describes an honest archive", async () => {
    const path = join(work, "honest.tar");
    await writeFile(
      path,
      testImageArchive({
        layers: [[{ name: "a", type: "file", data: Buffer.from("a") }]],
        names: ["docker.io/library/a:1"],
      }).archive,
    );
    const result = await inspect(path);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("docker.io/library/a:1");
    // A link the user names (nix-build's `result`) is followed to the archive it points at.
    const link = join(work, "result");
    await symlink(path, link);
    const linked = await inspect(link);
    expect(linked.code).toBe(0);
    expect(linked.stdout).toContain("docker.io/library/a:1");
  });

  it("refuses 10 GiB gzip bombs naming the bound, with peak RSS under 256 MB", async () => {
    const zeros = createHash("sha256")
      .update(Buffer.alloc(16 * MiB))
      .digest("hex");
    const cases: [string, Parameters<typeof writeGzipBomb>[1], string][] = [
      [
        "one-entry.tar.gz",
        { entries: [{ name: `blobs/sha256/${"0".repeat(64)}`, size: 10 * GiB }] },
        "maxEntryBytes (256 MiB)",
      ],
      [
        "repeated-blob.tar.gz",
        {
          entries: Array.from({ length: 640 }, () => ({
            name: `blobs/sha256/${zeros}`,
            size: 16 * MiB,
          })),
        },
        "maxUncompressedBytes (256 MiB)",
      ],
      ["zeros.gz", { zeros: 10 * GiB }, "neither an OCI layout"],
    ];
    for (const [name, options, message] of cases) {
      const path = join(work, name);
      await writeGzipBomb(path, options);
      const result = await inspect(path);
      console.log(
        `inspect ${name}: exit ${result.code}, peak RSS ${(result.peakRss / MiB).toFixed(0)} MiB`,
      );
      expect(result.code, name).not.toBe(0);
      expect(result.stderr, name).toContain(message);
      expect(result.stderr.length, name).toBeLessThan(2048);
      expect(result.peakRss, name).toBeLessThan(256 * 1000 * 1000);
      await rm(path);
    }
  });

  it("refuses a 512 MiB plain tar, a symlink to /dev/zero and a FIFO without reading them", async () => {
    const big = join(work, "big.tar");
    const handle = await open(big, "w");
    await handle.truncate(512 * MiB);
    await handle.close();
    const link = join(work, "zero.tar");
    await symlink("/dev/zero", link);
    const fifo = join(work, "fifo.tar");
    await execFileAsync("mkfifo", [fifo]);
    for (const [path, message] of [
      [big, "maxArchiveBytes (256 MiB)"],
      // The link the user names is followed; what it points at is not a regular file.
      [link, "character device"],
      [fifo, "FIFO"],
    ] as const) {
      const result = await inspect(path);
      expect(result.code, path).not.toBe(0);
      expect(result.stderr, path).toContain(message);
      expect(result.peakRss, path).toBeLessThan(128 * MiB);
    }
  });
});
