import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { findProgram, nixE2eSkipReason } from "@nix-snapshotter/nix-store/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createStandInSet,
  get,
  type RegistryProcess,
  registryEntry,
  type StandInSet,
  startRegistryProcess,
} from "./testing/index.js";

/**
 * A package set in a real git repository made here (`pkgs_repo`): `latest` is the configured
 * default branch (`main`, while the repository's HEAD is on `dev`); another tag names a branch, a
 * git tag (annotated, peeled to its commit) or a full commit hash. `git ls-remote` resolves
 * branches and tags, Nix (fetchGit, all refs) checks commits; the commit keys the cache.
 */
const execFileAsync = promisify(execFile);
const skip =
  nixE2eSkipReason(["nix-build", "nix-instantiate", "nix-store"]) ??
  (findProgram("git") ? undefined : "git missing") ??
  (existsSync(registryEntry) ? undefined : "run pnpm build first");

/** A GET and the digest the registry answered it with. */
async function getDigest(port: number, path: string) {
  const response = await get(port, path);
  return { ...response, digest: String(response.headers["docker-content-digest"] ?? "") };
}

describe.skipIf(skip !== undefined)(
  `nix-registry with a git package set${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    let dir: string;
    let sets: StandInSet[] = [];
    let registry: RegistryProcess;
    let devCommit: string;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "nix-registry-git-"));
      const unique = `${process.pid}-${Date.now()}`;
      sets = [
        await createStandInSet(`git-main-${unique}`),
        await createStandInSet(`git-dev-${unique}`),
        await createStandInSet(`git-v1-${unique}`),
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
      const commitSet = async (index: number, message: string) => {
        await copyFile(join(sets[index]!.path, "default.nix"), join(repo, "default.nix"));
        await git("add", "default.nix");
        await git("commit", "-qm", message);
      };
      await execFileAsync("git", ["init", "-q", "-b", "main", repo]);
      await commitSet(0, "main");
      await git("checkout", "-qb", "release");
      await commitSet(2, "release 1");
      await git("tag", "-a", "v1", "-m", "version 1");
      await git("checkout", "-q", "main");
      await git("checkout", "-qb", "dev");
      await commitSet(1, "dev");
      devCommit = (await git("rev-parse", "HEAD")).stdout.trim();
      // The repository's HEAD stays on dev: `latest` must follow the configured branch.
      registry = await startRegistryProcess({
        dir,
        pkgsRepo: `file://${repo}`,
        gcRootsName: `registry-git-${unique}`,
        env: { NIX_REGISTRY_DEFAULT_BRANCH: "main" },
      });
    });

    afterAll(async () => {
      await registry?.remove();
      for (const set of sets) await set.remove();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    /** The manifest (not the index) of `tag`: each revision's image names its own hello. */
    const manifestOf = async (tag: string) => {
      const index = await getDigest(registry.port, `/v2/hello/manifests/${tag}`);
      expect(index.status, `${tag}: ${index.body}`).toBe(200);
      const digest = JSON.parse(index.body).manifests[0].digest;
      return {
        index: index.digest,
        manifest: (await get(registry.port, `/v2/hello/manifests/${digest}`)).body,
      };
    };

    it("serves latest from the configured default branch, not the repository's HEAD", async () => {
      const latest = await manifestOf("latest");
      const main = await manifestOf("main");
      const dev = await manifestOf("dev");
      expect(latest.index).toBe(main.index);
      expect(dev.index).not.toBe(latest.index);
      expect(dev.manifest).not.toBe(latest.manifest);
      expect((await manifestOf("latest")).index).toBe(latest.index);
    });

    it("serves a git tag (annotated, peeled) and a full commit hash", async () => {
      const v1 = await manifestOf("v1");
      const release = await manifestOf("release");
      expect(v1.index).toBe(release.index);
      expect(v1.index).not.toBe((await manifestOf("main")).index);
      // The commit of dev is the same revision as the branch: the same cached image.
      expect((await manifestOf(devCommit)).index).toBe((await manifestOf("dev")).index);
    });

    it("lists latest, the branches and the git tags in tags/list, paged", async () => {
      const all = await get(registry.port, "/v2/hello/tags/list");
      expect(all.status).toBe(200);
      expect(JSON.parse(all.body)).toEqual({
        name: "hello",
        tags: ["dev", "latest", "main", "release", "v1"],
      });
      const first = await get(registry.port, "/v2/hello/tags/list?n=2");
      expect(JSON.parse(first.body).tags).toEqual(["dev", "latest"]);
      expect(first.headers.link).toBe('</v2/hello/tags/list?n=2&last=latest>; rel="next"');
      const rest = await get(registry.port, "/v2/hello/tags/list?n=2&last=main");
      expect(JSON.parse(rest.body).tags).toEqual(["release", "v1"]);
      expect(rest.headers.link).toBeUndefined();
    });

    it("answers MANIFEST_UNKNOWN for a ref or commit the repository lacks", async () => {
      const response = await get(registry.port, "/v2/hello/manifests/no-such-branch");
      expect(response.status).toBe(404);
      expect(JSON.parse(response.body).errors[0]).toMatchObject({
        code: "MANIFEST_UNKNOWN",
        message: expect.stringContaining('"no-such-branch": no branch, git tag or commit'),
      });
      const commit = await get(registry.port, `/v2/hello/manifests/${"0".repeat(40)}`);
      expect(commit.status).toBe(404);
      expect(JSON.parse(commit.body).errors[0]).toMatchObject({
        code: "MANIFEST_UNKNOWN",
        message: expect.stringContaining("no such commit"),
      });
    });

    it("refuses tags outside the grammar before git or Nix sees them", async () => {
      for (const tag of ["-upload-pack=touch", "a..b", "x".repeat(129), "main.lock"]) {
        const response = await get(registry.port, `/v2/hello/manifests/${tag}`);
        expect(response.status, tag).toBe(404);
        expect(JSON.parse(response.body).errors[0].message, tag).toContain("is not a valid tag");
      }
    });

    it("stops on SIGTERM, exiting 0", async () => {
      await registry.stop();
      expect(registry.process.child.exitCode).toBe(0);
      expect(await registry.log()).toContain('"signal":"SIGTERM"');
    });
  },
);
