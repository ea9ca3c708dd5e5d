import { execFile } from "node:child_process";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  findProgram,
  nixE2eSkipReason,
  TEST_GC_ROOTS_PARENT,
} from "@nix-snapshotter/nix-store/testing";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultConfig } from "./config.js";
import { type RunningRegistry, startRegistry } from "./registry.js";
import { createStandInSet, type StandInSet } from "./testing/stand-in-set.js";

/**
 * A package set in a git repository (`pkgs_repo`): `latest` is HEAD, another tag names a branch,
 * each resolved by real Nix (fetchGit) to the commit that keys the cache.
 */
const execFileAsync = promisify(execFile);
const skip =
  nixE2eSkipReason(["nix-build", "nix-instantiate", "nix-store"]) ??
  (findProgram("git") ? undefined : "git missing");

function get(
  port: number,
  path: string,
): Promise<{ status: number; digest: string; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: "127.0.0.1", port, path }, (response) => {
      let body = "";
      response.setEncoding("utf8").on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () =>
        resolve({
          status: response.statusCode ?? 0,
          digest: String(response.headers["docker-content-digest"] ?? ""),
          body,
        }),
      );
    });
    request.on("error", reject);
    request.end();
  });
}

describe.skipIf(skip !== undefined)(
  `nix-registry with a git package set${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    let dir: string;
    let sets: StandInSet[] = [];
    let registry: RunningRegistry;
    let rootsDir: string;
    const savedNixConfig = process.env.NIX_CONFIG;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "nix-registry-git-"));
      const unique = `${process.pid}-${Date.now()}`;
      sets = [
        await createStandInSet(`git-main-${unique}`),
        await createStandInSet(`git-dev-${unique}`),
      ];
      const repo = join(dir, "repo");
      const git = (...args: string[]) =>
        execFileAsync("git", [
          "-C",
          repo,
          "-c",
          "user.name=test",
          "-c",
          "user.email=test@localhost",
          ...args,
        ]);
      await execFileAsync("git", ["init", "-q", "-b", "main", repo]);
      await copyFile(join(sets[0]!.path, "default.nix"), join(repo, "default.nix"));
      await git("add", "default.nix");
      await git("commit", "-qm", "main");
      await git("checkout", "-qb", "dev");
      await copyFile(join(sets[1]!.path, "default.nix"), join(repo, "default.nix"));
      await git("commit", "-qam", "dev");
      await git("checkout", "-q", "main");
      process.env.NIX_CONFIG = "substituters =\nsandbox = false";
      rootsDir = join(TEST_GC_ROOTS_PARENT, `registry-git-${unique}`);
      registry = await startRegistry({
        config: {
          ...defaultConfig(),
          host: "127.0.0.1",
          port: 0,
          pkgsRepo: `file://${repo}`,
          storagePath: join(dir, "storage"),
          gcRootsDir: rootsDir,
          nixTimeout: 240,
        },
        logger: pino({ level: "silent" }),
      });
    });

    afterAll(async () => {
      await registry?.close();
      if (savedNixConfig === undefined) delete process.env.NIX_CONFIG;
      else process.env.NIX_CONFIG = savedNixConfig;
      if (rootsDir) await rm(rootsDir, { recursive: true, force: true });
      for (const set of sets) await set.remove();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("serves latest from HEAD and a branch by its name, as different images", async () => {
      const latest = await get(registry.port, "/v2/hello/manifests/latest");
      expect(latest.status, latest.body).toBe(200);
      const dev = await get(registry.port, "/v2/hello/manifests/dev");
      expect(dev.status, dev.body).toBe(200);
      expect(dev.digest).not.toBe(latest.digest);
      // Each branch's image names that branch's build of hello.
      const manifestOf = async (digest: string) => {
        const index = JSON.parse((await get(registry.port, `/v2/hello/manifests/${digest}`)).body);
        return (await get(registry.port, `/v2/hello/manifests/${index.manifests[0].digest}`)).body;
      };
      expect(await manifestOf(latest.digest)).not.toBe(await manifestOf(dev.digest));
      const again = await get(registry.port, "/v2/hello/manifests/latest");
      expect(again.digest).toBe(latest.digest);
    });

    it("answers MANIFEST_UNKNOWN for a branch the repository lacks", async () => {
      const response = await get(registry.port, "/v2/hello/manifests/no-such-branch");
      expect(response.status).toBe(404);
      expect(JSON.parse(response.body).errors[0]).toMatchObject({
        code: "MANIFEST_UNKNOWN",
        message: expect.stringContaining('no branch "no-such-branch"'),
      });
    });
  },
);
