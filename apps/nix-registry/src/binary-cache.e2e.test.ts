import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { findProgram, nixE2eSkipReason } from "@nix-snapshotter/nix-store/testing";
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
 *
 * The Nix programs are wrappers that run the real ones, except that `nix` (the export) can be
 * made to leave what a `nix copy` killed between a NAR's upload and its narinfo leaves (a NAR no
 * narinfo names, upload temp files) and then hang, so that the registry is killed mid-export.
 */
const execFileAsync = promisify(execFile);
/** A NAR file name no narinfo names (Nix's base-32 alphabet). */
const ORPHAN_NAR = `${"0".repeat(52)}.nar.zst`;
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
    let unique: string;
    const savedNixConfig = process.env.NIX_CONFIG;
    const start = (logName: string) =>
      startRegistryProcess({
        dir,
        pkgsPath: set.path,
        gcRootsName: `registry-cache-${unique}`,
        binaryCacheSecretKeyFile: join(dir, "key.sec"),
        nixBin: join(dir, "nix-bin"),
        logName,
      });

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "nix-registry-cache-"));
      unique = `${process.pid}-${Date.now()}`;
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
      const bin = join(dir, "nix-bin");
      await mkdir(bin);
      for (const program of ["nix-build", "nix-instantiate", "nix-store"]) {
        await writeFile(join(bin, program), `#!/bin/sh\nexec "${findProgram(program)}" "$@"\n`);
        await chmod(join(bin, program), 0o755);
      }
      // With `hang-export` present: the files of an interrupted upload, a marker, then a hang
      // (exec: the sleep keeps the registry's parent-death signal).
      await writeFile(
        join(bin, "nix"),
        [
          "#!/bin/sh",
          `if [ -e "${dir}/hang-export" ]; then`,
          // biome-ignore lint/suspicious/noTemplateCurlyInString: the shell's parameter expansion
          '  for arg in "$@"; do case "$arg" in file://*) cache="${arg#file://}"; cache="${cache%%\\?*}";; esac; done',
          '  mkdir -p "$cache/nar"',
          `  echo partial > "$cache/nar/${ORPHAN_NAR}"`,
          `  echo partial > "$cache/nar/${ORPHAN_NAR}.tmp.4242.1"`,
          `  echo partial > "$cache/${"1".repeat(32)}.narinfo.tmp.4242.2"`,
          `  touch "${dir}/export-started"`,
          "  exec sleep 600",
          "fi",
          `exec "${findProgram("nix")}" "$@"`,
          "",
        ].join("\n"),
      );
      await chmod(join(bin, "nix"), 0o755);
      registry = await start("registry.log");
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

    it("removes what an export killed before its narinfo left, at start and by the next export", async () => {
      const cache = join(dir, "storage", "binary-cache");
      const listing = async () => ({
        top: (await readdir(cache)).sort(),
        nar: (await readdir(join(cache, "nar"))).sort(),
      });
      // hello's closure is exported by the tests above.
      await closureInfoOf();
      const before = await listing();
      expect(before.top.filter((file) => file.endsWith(".narinfo")).length).toBeGreaterThan(0);

      await writeFile(join(dir, "hang-export"), "");
      const pending = get(registry.port, "/v2/busybox/manifests/latest").catch(
        (error: Error) => error,
      );
      for (let attempt = 0; !existsSync(join(dir, "export-started")); attempt++) {
        if (attempt > 2400) throw new Error(`no export started:\n${await registry.log()}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const during = await listing();
      expect(during.nar).toContain(ORPHAN_NAR);
      expect(during.top).toContain(`${"1".repeat(32)}.narinfo.tmp.4242.2`);
      await registry.kill();
      expect(await pending).toBeInstanceOf(Error);
      await rm(join(dir, "hang-export"));

      // At start: the orphans go, every complete narinfo and its NAR stay.
      registry = await start("registry-restarted.log");
      const after = await listing();
      expect(after).toEqual(before);
      expect(await registry.log()).toContain("removed binary cache files of an interrupted export");

      // By the next export: an orphan appearing while the registry runs goes with busybox's export.
      await writeFile(join(cache, "nar", ORPHAN_NAR), "partial\n");
      const busybox = await get(registry.port, "/v2/busybox/manifests/latest");
      expect(busybox.status, busybox.body).toBe(200);
      const last = await listing();
      expect(last.nar).not.toContain(ORPHAN_NAR);
      expect(last.top.filter((file) => file.endsWith(".narinfo")).length).toBeGreaterThan(
        after.top.filter((file) => file.endsWith(".narinfo")).length,
      );
      for (const file of after.nar) expect(last.nar, file).toContain(file);
    });
  },
);
