import { execFile } from "node:child_process";
import { readdir, readlink } from "node:fs/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBinaryCache } from "./binary-cache.js";
import { createNixFixtures, type NixFixtures, nixE2eSkipReason } from "./fixtures.js";

const exec = promisify(execFile);
const skipReason = nixE2eSkipReason();

async function references(path: string): Promise<string[]> {
  const { stdout } = await exec("nix-store", ["--query", "--references", path]);
  return stdout.split("\n").filter(Boolean).sort();
}

describe.skipIf(skipReason !== undefined)(
  `nix-store test fixtures${skipReason === undefined ? "" : ` (skipped: ${skipReason})`}`,
  () => {
    let fixtures: NixFixtures;

    beforeAll(async () => {
      fixtures = await createNixFixtures({ label: "fixtures-e2e" });
    });

    afterAll(async () => {
      await fixtures?.cleanup();
    });

    it("builds a static busybox that runs from the store", async () => {
      const busybox = await fixtures.busybox();
      expect(busybox.closure).toEqual([busybox.storePath]);
      const { stdout } = await exec(busybox.shell, ["-c", "echo from busybox"]);
      expect(stdout).toBe("from busybox\n");
      expect(await readlink(`${fixtures.rootsDir}/busybox`)).toBe(busybox.storePath);
    });

    it("builds a redis-server whose loader and libraries all come from the store", async () => {
      const redis = await fixtures.redis();
      const { stdout: version } = await exec(redis.executable, ["--version"]);
      expect(version).toMatch(/^Redis server v=\d/);
      const loader = (await readdir(`${redis.glibc}/lib`)).find((name) =>
        name.startsWith("ld-linux"),
      );
      const { stdout: resolved } = await exec(`${redis.glibc}/lib/${loader}`, [
        "--list",
        redis.executable,
      ]);
      const targets = resolved
        .split("\n")
        .map((line) => /=>\s+(\S+)/.exec(line)?.[1])
        .filter((target): target is string => target !== undefined);
      expect(targets.length).toBeGreaterThan(5);
      expect(targets.filter((target) => !target.startsWith("/nix/store/"))).toEqual([]);
      // glibc and the libraries are separate store paths, and real references of redis.
      expect(Object.keys(redis.libraries)).toEqual(
        expect.arrayContaining(["glibc", "gcc-libs", "openssl"]),
      );
      expect(new Set(Object.values(redis.libraries)).size).toBe(
        Object.keys(redis.libraries).length,
      );
      expect(await references(redis.storePath)).toEqual(
        expect.arrayContaining([redis.glibc, redis.libraries.openssl!]),
      );
      expect(redis.closure).toEqual([...Object.values(redis.libraries), redis.storePath].sort());
    });

    it("builds a script whose interpreter is in its closure", async () => {
      const script = await fixtures.script();
      expect((await exec(script.executable)).stdout).toBe("hello from nix store\n");
      expect(script.closure).toContain(script.interpreter.replace(/\/bin\/sh$/, ""));
    });

    it("imports synthetic closures whose references Nix agrees with", async () => {
      const synthetic = await fixtures.syntheticClosure({ count: 300, fanout: 4, seed: "fixed" });
      expect(synthetic.paths).toHaveLength(300);
      for (const path of [synthetic.paths[0]!, synthetic.paths[150]!, synthetic.paths[299]!]) {
        expect(await references(path)).toEqual([...synthetic.references.get(path)!].sort());
      }
      expect(await references(synthetic.closureInfo!)).toEqual([...synthetic.paths].sort());
      // A seed gives the same paths again.
      const again = await fixtures.syntheticClosure({ count: 300, fanout: 4, seed: "fixed" });
      expect(again.paths).toEqual(synthetic.paths);
      await again.release();
      await synthetic.release();
    });

    it("imports a closure of 10,000 paths in one process", async () => {
      const synthetic = await fixtures.syntheticClosure({ count: 10_000, name: "ten-thousand" });
      const { stdout } = await exec(
        "nix-store",
        ["--query", "--requisites", synthetic.closureInfo!],
        {
          maxBuffer: 64 * 1024 * 1024,
        },
      );
      const closure = stdout.split("\n").filter(Boolean);
      expect(closure).toHaveLength(10_001);
      expect(new Set(closure)).toEqual(new Set([...synthetic.paths, synthetic.closureInfo!]));
      await synthetic.release();
      // Keep the store small for everyone's garbage collections.
      await fixtures.deletePaths([synthetic.closureInfo!, ...synthetic.paths]);
    });

    it("serves a binary cache over HTTP with the configured latency", async () => {
      const busybox = await fixtures.busybox();
      const cache = await startBinaryCache({ paths: [busybox.storePath], latencyMs: 50 });
      try {
        const hash = busybox.storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
        const narinfo = await fetch(`${cache.url}/${hash}.narinfo`);
        expect(narinfo.status).toBe(200);
        expect(await narinfo.text()).toContain(`StorePath: ${busybox.storePath}`);
        expect((await fetch(`${cache.url}/nix-cache-info`)).status).toBe(200);
        expect((await fetch(`${cache.url}/../../etc/passwd`)).status).toBe(404);
        expect((await fetch(`${cache.url}/%2e%2e/%2e%2e/etc/passwd`)).status).toBe(404);
        expect((await fetch(`${cache.url}/nix-cache-info`, { method: "POST" })).status).toBe(405);
        expect(cache.requests()).toBe(5);
      } finally {
        await cache.close();
      }
    });
  },
);
