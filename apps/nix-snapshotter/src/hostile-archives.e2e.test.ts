import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { ImageService } from "@nix-snapshotter/api/cri/v1";
import { Health } from "@nix-snapshotter/api/health/v1";
import {
  type Containerd,
  containerdSkipReason,
  startContainerd,
} from "@nix-snapshotter/containerd-client/testing";
import {
  createNixFixtures,
  type NixFixtures,
  nixE2eSkipReason,
} from "@nix-snapshotter/nix-store/testing";
import { testImageArchive, writeGzipBomb } from "@nix-snapshotter/oci/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type DaemonProcess,
  daemonEntry,
  startDaemonProcess,
  unixGrpcTransport,
} from "./testing/daemon-process.js";

/**
 * Hostile `nix:0` archives pulled through the daemon's CRI ImageService (containerd 1.6's CRI
 * behind it, real Nix store): the reproductions of issue 14 as fixtures. Each pull must end in a
 * gRPC status naming what was refused, with the daemon's memory and its other RPCs unaffected.
 */

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const skip =
  nixE2eSkipReason(["nix-store"]) ??
  containerdSkipReason("1.6") ??
  (existsSync(daemonEntry) ? "" : "the daemon is not built");

/** VmRSS or VmHWM of a process, in bytes. */
async function memory(pid: number, field: "VmRSS" | "VmHWM"): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
  if (match === null) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** Resets the process's peak RSS (VmHWM) to its current RSS. */
async function resetPeak(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, "5");
}

describe.skipIf(skip !== "")(`hostile nix:0 archives through the daemon ${skip}`, () => {
  const nonce = randomBytes(4).toString("hex");
  let work: string;
  let fixtures: NixFixtures;
  let daemon: DaemonProcess;
  let containerd: Containerd;
  let images: ReturnType<typeof createClient<typeof ImageService>>;
  let pid: number;

  /** Adds `file` to the store under `name` and roots it; returns the store path. */
  const addToStore = async (file: string, root = `hostile-${randomBytes(4).toString("hex")}`) => {
    const storePath = (await execFileAsync("nix-store", ["--add", file])).stdout.trim();
    await fixtures.root(root, [storePath]);
    return storePath;
  };

  const pull = async (storePath: string, timeoutMs = 120_000) => {
    const error = await images
      .pullImage({ image: { image: `nix:0${storePath}` } }, { timeoutMs })
      .then(
        () => undefined,
        (caught: unknown) => ConnectError.from(caught),
      );
    expect(error, `pull of ${storePath} must fail`).toBeInstanceOf(ConnectError);
    return error!;
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "hostile-archives-e2e-"));
    fixtures = await createNixFixtures({ label: "hostile-archives" });
    daemon = await startDaemonProcess({
      mountMode: "hardlink",
      imageService: { containerdAddress: join(work, "containerd.sock") },
    });
    pid = daemon.child.pid!;
    containerd = await startContainerd({
      version: "1.6",
      proxyPlugins: { nix: daemon.address },
      cri: { snapshotter: "nix", restrictOomScoreAdj: true },
    });
    await symlink(containerd.address, join(work, "containerd.sock"));
    images = createClient(ImageService, daemon.transport);
  }, 180_000);

  afterAll(async () => {
    await containerd?.stop();
    await daemon?.cleanup();
    await fixtures?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("refuses a store path that is a symlink to /dev/zero, reading nothing", async () => {
    const link = join(work, `nix-image-zero-${nonce}`);
    await symlink("/dev/zero", link);
    const storePath = await addToStore(link);
    const before = await memory(pid, "VmRSS");
    await resetPeak(pid);
    const error = await pull(storePath);
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toContain("symbolic link");
    expect(error.rawMessage).toContain(storePath);
    const grown = (await memory(pid, "VmHWM")) - before;
    console.log(`symlink to /dev/zero: peak RSS ${(grown / MiB).toFixed(1)} MiB over before`);
    expect(grown).toBeLessThan(32 * MiB);
    // The archive's root is released: nothing of the refused pull is kept.
    const roots = await readdir(daemon.gcRootsDir).catch(() => []);
    expect(roots.filter((name) => name.startsWith("cri-image-"))).toEqual([]);
  });

  it("answers a 1 MiB nix:0 reference with a small InvalidArgument status", async () => {
    for (const image of [
      `nix:0/nix/store/${"a".repeat(1024 * 1024)}`,
      `nix:0/nix/store/${"0".repeat(32)}-${"a".repeat(1024 * 1024)}.tar`,
    ]) {
      const error = await images.pullImage({ image: { image } }).then(
        () => undefined,
        (caught: unknown) => ConnectError.from(caught),
      );
      expect(error?.code).toBe(Code.InvalidArgument);
      expect(error!.rawMessage.length).toBeLessThan(2048);
      const status = await images.imageStatus({ image: { image } }).then(
        () => undefined,
        (caught: unknown) => ConnectError.from(caught),
      );
      expect(status?.code).toBe(Code.InvalidArgument);
    }
    // The daemon still answers.
    expect((await createClient(Health, daemon.transport).check({})).status).toBe(1);
  });

  it("refuses a store path linking to a valid archive outside the store", async () => {
    const outside = join(work, "outside.tar");
    await writeFile(
      outside,
      testImageArchive({ layers: [[{ name: "x", type: "file", data: Buffer.from("x") }]] }).archive,
    );
    const link = join(work, `nix-image-outside-${nonce}.tar`);
    await symlink(outside, link);
    const error = await pull(await addToStore(link));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toContain("symbolic link");
  });

  it("refuses a store path that is a directory", async () => {
    const directory = join(work, `nix-image-dir-${nonce}`);
    await execFileAsync("mkdir", [directory]);
    await writeFile(join(directory, "index.json"), "{}");
    const error = await pull(await addToStore(directory));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toContain("directory");
  });

  it("refuses 10 GiB gzip bombs with a bound-naming error; Health answers all along; bounded RSS", async () => {
    // One entry declaring 10 GiB, then 10 GiB of zeros: refused from the header.
    const single = join(work, `nix-image-bomb-one-${nonce}.tar.gz`);
    await writeGzipBomb(single, {
      entries: [{ name: `blobs/sha256/${"0".repeat(64)}`, size: 10 * GiB }],
    });
    // 640 entries of 16 MiB of zeros (10 GiB in all), each named by its true digest: each is
    // under the entry bound and passes its digest check, so the stream is inflated and hashed
    // until the decompressed bound refuses it.
    const zerosDigest = createHash("sha256")
      .update(Buffer.alloc(16 * MiB))
      .digest("hex");
    const many = join(work, `nix-image-bomb-many-${nonce}.tar.gz`);
    await writeGzipBomb(many, {
      entries: Array.from({ length: 640 }, () => ({
        name: `blobs/sha256/${zerosDigest}`,
        size: 16 * MiB,
      })),
    });
    const health = unixGrpcTransport(daemon.address);
    const healthClient = createClient(Health, health.transport);
    /** Health calls back to back until `done()`; each must answer SERVING within `deadlineMs`. */
    const pollHealth = async (done: () => boolean, deadlineMs: number) => {
      const latencies: number[] = [];
      const failures: string[] = [];
      do {
        const started = performance.now();
        const status = await healthClient.check({ service: "" }, { timeoutMs: deadlineMs }).then(
          (response) => response.status,
          (error: unknown) => ConnectError.from(error).code,
        );
        const elapsed = performance.now() - started;
        if (status !== 1)
          failures.push(`call ${latencies.length}: ${elapsed.toFixed(0)} ms, ${status}`);
        latencies.push(elapsed);
      } while (!done());
      return { calls: latencies.length, max: Math.max(...latencies), failures };
    };
    try {
      // Connected before the measurement: the first call also sets up the HTTP/2 session.
      expect((await healthClient.check({ service: "" })).status).toBe(1);
      for (const [file, bound] of [
        [single, "maxEntryBytes"],
        [many, "maxUncompressedBytes"],
      ] as const) {
        const storePath = await addToStore(file);
        // Control: the same poll for 2 s with nothing else asked of the daemon. On a quiet
        // machine (control calls all under 50 ms) every call during the refusal must answer
        // within 300 ms. On an overloaded one the bound is 1 s. Both are far below the 9-25 s
        // stalls a synchronous inflate caused: with a load average above 10 on 2 cores (seen here
        // while other suites ran) an idle daemon misses 100 ms now and then, and the fork of
        // `nix-store --realise` that every pull makes (child_process.spawn forks synchronously)
        // alone held a 140 MB Node process for up to 126 ms (a CI run failed at 100 ms with one
        // 167 ms call after a quiet control, so the quiet bound leaves room for one fork).
        const controlEnd = performance.now() + 2000;
        const control = await pollHealth(() => performance.now() > controlEnd, 1000);
        const deadlineMs = control.max < 50 ? 300 : 1000;
        const before = await memory(pid, "VmRSS");
        await resetPeak(pid);
        let done = false;
        const pulling = pull(storePath).finally(() => {
          done = true;
        });
        const during = await pollHealth(() => done, deadlineMs);
        const error = await pulling;
        const peak = await memory(pid, "VmHWM");
        console.log(
          `${bound}: control ${control.calls} Health calls, slowest ${control.max.toFixed(1)} ms; during the refusal ${during.calls} calls, slowest ${during.max.toFixed(1)} ms (deadline ${deadlineMs} ms); RSS before ${(before / MiB).toFixed(0)} MiB, peak ${(peak / MiB).toFixed(0)} MiB`,
        );
        expect(control.failures).toEqual([]);
        expect(during.failures, `every Health call answers within ${deadlineMs} ms`).toEqual([]);
        expect(error.code).toBe(Code.InvalidArgument);
        expect(error.rawMessage).toContain(bound);
        expect(error.rawMessage.length).toBeLessThan(1024);
        // A repeated blob is kept once: 16 MiB of the 10 GiB stream stays in memory; with
        // zlib's buffers, the read stream, hashing and the pull's own work the peak was
        // measured here at 70 MiB over the RSS before the pull.
        expect(peak - before).toBeLessThan(112 * MiB);
        // The documented bound on the daemon's whole RSS while a bomb is refused (docs/cri.md):
        // the RSS before includes what earlier cases of this file left (149-246 MiB peaks seen).
        expect(peak).toBeLessThan(320 * MiB);
      }
    } finally {
      health.close();
    }
  });

  it("refuses a 512 MiB plain tar from its size without reading it", async () => {
    const big = join(work, `nix-image-big-${nonce}.tar`);
    // Real bytes (nix-store --add reads and hashes them), mostly zeros, valid tar start.
    await execFileAsync("sh", ["-c", `head -c ${512 * MiB} /dev/zero > ${JSON.stringify(big)}`]);
    const storePath = await addToStore(big, "big");
    await rm(big);
    const before = await memory(pid, "VmRSS");
    await resetPeak(pid);
    const error = await pull(storePath);
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toContain("maxArchiveBytes (128 MiB)");
    const grown = (await memory(pid, "VmHWM")) - before;
    console.log(`512 MiB tar: peak RSS ${(grown / MiB).toFixed(1)} MiB over before`);
    expect(grown).toBeLessThan(32 * MiB);
    await fixtures.unroot("big");
    await fixtures.deletePaths([storePath]);
  });
});
