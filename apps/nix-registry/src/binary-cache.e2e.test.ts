import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { nixE2eSkipReason } from "@nix-snapshotter/nix-store/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createStandInSet,
  get,
  OFFLINE_NIX_CONFIG,
  type RegistryProcess,
  registryEntry,
  type StandInSet,
  startRegistryProcess,
} from "./testing/index.js";

/**
 * The binary cache export: each image's closure is copied (signed) into the registry's binary
 * cache, which a node's Nix substitutes from over HTTP. The node here is a separate chroot store
 * (`--store <dir>`), empty at the start, trusting only the registry's public key.
 */
const execFileAsync = promisify(execFile);
const skip =
  nixE2eSkipReason(["nix-build", "nix-instantiate", "nix-store", "nix"]) ??
  (existsSync(registryEntry) ? undefined : "run pnpm build first");

describe.skipIf(skip !== undefined)(
  `nix-registry's binary cache${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    let dir: string;
    let set: StandInSet;
    let registry: RegistryProcess;
    let publicKey: string;
    const savedNixConfig = process.env.NIX_CONFIG;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "nix-registry-cache-"));
      const unique = `${process.pid}-${Date.now()}`;
      set = await createStandInSet(`cache-${unique}`);
      await execFileAsync("nix-store", [
        "--generate-binary-cache-key",
        "nix-registry-test-1",
        join(dir, "key.sec"),
        join(dir, "key.pub"),
      ]);
      publicKey = (await readFile(join(dir, "key.pub"), "utf8")).trim();
      // The node's Nix below: offline too.
      process.env.NIX_CONFIG = OFFLINE_NIX_CONFIG;
      registry = await startRegistryProcess({
        dir,
        pkgsPath: set.path,
        gcRootsName: `registry-cache-${unique}`,
        binaryCacheSecretKeyFile: join(dir, "key.sec"),
      });
    });

    afterAll(async () => {
      await registry?.remove();
      if (savedNixConfig === undefined) delete process.env.NIX_CONFIG;
      else process.env.NIX_CONFIG = savedNixConfig;
      await set?.remove();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const closureInfoOf = async (): Promise<string> => {
      const index = JSON.parse((await get(registry.port, "/v2/hello/manifests/latest")).body);
      const manifest = JSON.parse(
        (await get(registry.port, `/v2/hello/manifests/${index.manifests[0].digest}`)).body,
      );
      return manifest.layers[0].annotations["containerd.io/snapshot/nix-closure"];
    };

    it("serves the image's closure, signed, to a node that trusts the key", async () => {
      const closureInfo = await closureInfoOf();
      expect(closureInfo).toMatch(/-closure-info$/);
      const info = await get(registry.port, "/nix-cache-info");
      expect(info.status).toBe(200);
      expect(info.body).toContain("StoreDir: /nix/store");
      const hash = closureInfo.slice("/nix/store/".length, "/nix/store/".length + 32);
      const narinfo = await get(registry.port, `/${hash}.narinfo`);
      expect(narinfo.status).toBe(200);
      expect(narinfo.body).toContain(`StorePath: ${closureInfo}`);
      expect(narinfo.body).toContain("Sig: nix-registry-test-1:");

      const node = join(dir, "node");
      const realise = (key: string) =>
        execFileAsync("nix-store", [
          "--store",
          node,
          "--realise",
          closureInfo,
          "--option",
          "substituters",
          `http://127.0.0.1:${registry.port}`,
          "--option",
          "trusted-public-keys",
          key,
        ]);
      // A node trusting another key substitutes nothing.
      await expect(
        realise("other-1:edC8iwq37FfpVVg6UY2HeOfcW0C8B2Sodw1N+Xm4IFM="),
      ).rejects.toThrow();
      await realise(publicKey);
      const storePaths = (await readFile(join(node, closureInfo, "store-paths"), "utf8"))
        .split("\n")
        .filter(Boolean);
      const hello = storePaths.find((path) => path.endsWith("-hello"))!;
      expect(existsSync(join(node, hello, "bin", "hello"))).toBe(true);
      for (const path of storePaths) expect(existsSync(join(node, path)), path).toBe(true);
    });

    it("serves only binary cache file names", async () => {
      for (const path of ["/../key.sec", "/nar/../../key.sec", "/nar/x.nar", "/abc.narinfo"]) {
        expect((await get(registry.port, path)).status, path).toBe(404);
      }
    });
  },
);
