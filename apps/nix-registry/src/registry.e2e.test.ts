import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import {
  chmod,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  type Containerd,
  containerdSkipReason,
  processesMentioning,
  runContainer,
  startContainerd,
} from "@nix-snapshotter/containerd-client/testing";
import {
  findProgram,
  nixE2eSkipReason,
  TEST_GC_ROOTS_PARENT,
} from "@nix-snapshotter/nix-store/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createStandInSet,
  get,
  type RegistryProcess,
  registryEntry,
  type StandInSet,
  type Started,
  startRegistryProcess as startRegistry,
} from "./testing/index.js";
import { snapshotterEntry, startSnapshotter, stopProcess } from "./testing/processes.js";

/**
 * The registry as nodes use it: the built daemon on 127.0.0.1 with a stand-in package set made
 * offline from the host's busybox, real Nix (through wrappers that count invocations), skopeo,
 * and containerd 2.1 whose `nix` proxy snapshotter is our nix-snapshotter daemon pulling
 * `127.0.0.1:<port>/hello/busybox:latest` and running it.
 */

const execFileAsync = promisify(execFile);
const SHADOW = ["$", "{builtins.readFile /etc/shadow}"].join("");

const skip =
  nixE2eSkipReason(["nix-store", "nix-build", "nix-instantiate"]) ??
  (existsSync("/bin/busybox") ? undefined : "no /bin/busybox (busybox-static)") ??
  (findProgram("skopeo") ? undefined : "skopeo missing") ??
  (existsSync(registryEntry) && existsSync(snapshotterEntry)
    ? undefined
    : "run pnpm build first") ??
  containerdSkipReason("2.1");

describe.skipIf(skip !== undefined)(
  `nix-registry serves containerd 2.1 through the nix snapshotter${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    let dir: string;
    let set: StandInSet;
    let registry: RegistryProcess;
    let snapshotter: Started;
    let containerd: Containerd;
    let port: number;
    let registryRoots: string;
    let snapshotterRoots: string;
    const invocations = async () =>
      (await readFile(join(dir, "nix-invocations.log"), "utf8").catch(() => ""))
        .split("\n")
        .filter(Boolean);
    let unique: string;
    const startRegistryProcess = async (logName: string) => {
      const started = await startRegistry({
        dir,
        pkgsPath: set.path,
        gcRootsName: `registry-${unique}`,
        nixBin: join(dir, "nix-bin"),
        platforms: ["amd64", "arm64"],
        logName,
      });
      registryRoots = started.gcRootsDir;
      return { registry: started, port: started.port };
    };
    const builds = async () =>
      (await invocations()).filter(
        (line) => line.startsWith("nix-build ") && line.includes(" system x86_64-linux "),
      ).length;
    /** nix-build attempts for arm64 (offered too: the index lists what could be built). */
    const armAttempts = async () =>
      (await invocations()).filter(
        (line) => line.startsWith("nix-build ") && line.includes(" system aarch64-linux "),
      ).length;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "nix-registry-e2e-"));
      unique = `${process.pid}-${randomBytes(4).toString("hex")}`;
      // A new marker each run: new store paths, so the first pull really builds.
      set = await createStandInSet(`registry-e2e-${unique}`);
      const bin = join(dir, "nix-bin");
      await mkdir(bin);
      for (const program of ["nix-build", "nix-instantiate", "nix-store"]) {
        const real = findProgram(program)!;
        await writeFile(
          join(bin, program),
          `#!/bin/sh\nprintf '%s\\n' "${program} $*" >> "${dir}/nix-invocations.log"\nexec "${real}" "$@"\n`,
        );
        await chmod(join(bin, program), 0o755);
      }
      snapshotterRoots = join(TEST_GC_ROOTS_PARENT, `registry-daemon-${unique}`);
      ({ registry, port } = await startRegistryProcess("registry.log"));

      const daemon = await startSnapshotter(dir, snapshotterRoots, "bind");
      snapshotter = daemon.process;
      const address = daemon.address;
      containerd = await startContainerd({ version: "2.1", proxyPlugins: { nix: address } });
    });

    afterAll(async () => {
      await containerd?.stop();
      await stopProcess(snapshotter);
      await registry?.remove();
      if (snapshotterRoots) await rm(snapshotterRoots, { recursive: true, force: true });
      await set?.remove();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const reference = () => `127.0.0.1:${port}/hello/busybox:latest`;

    it("builds the image on the first pull; containerd runs it through the nix snapshotter", async () => {
      await containerd.ctr(["images", "pull", "--plain-http", "--snapshotter", "nix", reference()]);
      expect(await builds()).toBe(1);
      const stdout = await runContainer(containerd, "nix", reference(), "hello-1", "/bin/hello");
      expect(stdout.trim()).toBe("hello from the nix registry");
      // busybox's applets linked at /bin from the package, found through the image's PATH.
      const listing = await runContainer(
        containerd,
        "nix",
        reference(),
        "hello-2",
        "sh",
        "-c",
        "echo $PATH; ls /bin",
      );
      expect(listing).toContain("/bin:/sbin:/usr/bin:/usr/sbin");
      expect(listing.split(/\s+/)).toEqual(expect.arrayContaining(["busybox", "hello", "sh"]));

      // The registry holds GC roots of the image's packages and closure info.
      const [entry] = await readdir(registryRoots);
      const links = await readdir(join(registryRoots, entry!));
      const targets = await Promise.all(
        links.map((link) => readlink(join(registryRoots, entry!, link))),
      );
      expect(targets.some((target) => target.endsWith("-closure-info"))).toBe(true);
      expect(targets.some((target) => target.endsWith("-hello"))).toBe(true);
      expect(targets.some((target) => target.endsWith("-busybox"))).toBe(true);
    });

    it("skopeo inspects the manifest: one nix layer with both annotation forms", async () => {
      const { stdout } = await execFileAsync("skopeo", [
        "inspect",
        "--tls-verify=false",
        "--raw",
        `docker://${reference()}`,
      ]);
      const index = JSON.parse(stdout) as {
        mediaType: string;
        manifests: { digest: string; platform: { architecture: string } }[];
      };
      expect(index.mediaType).toBe("application/vnd.oci.image.index.v1+json");
      // amd64 and arm64 are offered; this host's Nix cannot build for aarch64-linux, so the index
      // lists amd64 alone and the log says why arm64 was left out.
      expect(index.manifests.map((entry) => entry.platform.architecture)).toEqual(["amd64"]);
      expect(await armAttempts()).toBe(1);
      expect(await registry.log()).toMatch(
        /"platform":"arm64".*platform left out of the image index/,
      );
      const manifest = JSON.parse(
        (
          await execFileAsync("skopeo", [
            "inspect",
            "--tls-verify=false",
            "--raw",
            `docker://127.0.0.1:${port}/hello/busybox@${index.manifests[0]!.digest}`,
          ])
        ).stdout,
      ) as { layers: { annotations: Record<string, string> }[] };
      expect(manifest.layers).toHaveLength(1);
      const annotations = manifest.layers[0]!.annotations;
      expect(annotations["containerd.io/snapshot/nix-closure"]).toMatch(/-closure-info$/);
      expect(annotations["containerd.io/snapshot/nix-layer"]).toBe("true");
      const inspected = JSON.parse(
        (
          await execFileAsync("skopeo", [
            "inspect",
            "--tls-verify=false",
            `docker://${reference()}`,
          ])
        ).stdout,
      ) as { Architecture: string; Os: string; Env: string[] };
      expect(inspected).toMatchObject({ Architecture: "amd64", Os: "linux" });
      expect(await builds()).toBe(1);
    });

    it("serves a second pull from the cache", async () => {
      await containerd.ctr(["images", "rm", reference()]);
      await containerd.ctr(["images", "pull", "--plain-http", "--snapshotter", "nix", reference()]);
      expect(await builds()).toBe(1);
      const metrics = (await get(port, "/metrics")).body;
      expect(metrics).toMatch(/nix_registry_cache_hit_total [1-9]/);
    });

    it("two concurrent first pulls cause one Nix build", async () => {
      const before = await builds();
      const name = `127.0.0.1:${port}/hello:latest`;
      // Two containerd clients (namespaces) pulling the same new image at once.
      const pull = (namespace?: string) =>
        containerd.ctr(
          ["images", "pull", "--plain-http", "--snapshotter", "nix", name],
          namespace === undefined ? {} : { namespace },
        );
      const pulls = await Promise.all([pull(), pull(`second-${process.pid}`)]);
      expect(pulls).toHaveLength(2);
      expect((await builds()) - before).toBe(1);
      const stdout = await runContainer(containerd, "nix", name, "hello-3", "/bin/hello");
      expect(stdout.trim()).toBe("hello from the nix registry");
    });

    it("refuses hostile names with clear errors and runs no Nix for them", async () => {
      const before = await invocations();
      const hostile = [
        "../etc",
        "hello/../../etc",
        SHADOW.replace(/ /g, "%20"),
        "a%22b",
        "a'b",
        "a".repeat(10_000),
        Array(500).fill("a").join("/"),
      ];
      for (const name of hostile) {
        const response = await get(port, `/v2/${name}/manifests/latest`);
        expect([400, 414], name.slice(0, 40)).toContain(response.status);
        expect(JSON.parse(response.body).errors[0].code).toBe("NAME_INVALID");
      }
      expect(await invocations()).toEqual(before);
    });

    it("names an unknown package, and says why an arm64 image cannot be built", async () => {
      const before = await builds();
      const unknown = await get(port, "/v2/hello/no-such-package/manifests/latest");
      expect(unknown.status).toBe(404);
      expect(JSON.parse(unknown.body).errors[0]).toMatchObject({
        code: "NAME_UNKNOWN",
        message: 'unknown packages: "no-such-package" is not in the package set',
      });
      expect(await builds()).toBe(before);
      const arm = await get(port, "/v2/arm64/hello/manifests/latest");
      expect(arm.status).toBe(500);
      expect(JSON.parse(arm.body).errors[0].message).toMatch(/aarch64-linux.*required to build/);
      expect(await readdir(registryRoots)).toHaveLength(2);
    });

    it("serves the shell meta-package (bash and coreutils of the set)", async () => {
      const name = `127.0.0.1:${port}/shell:latest`;
      await containerd.ctr(["images", "pull", "--plain-http", "--snapshotter", "nix", name]);
      const stdout = await runContainer(
        containerd,
        "nix",
        name,
        "shell-1",
        "/bin/bash",
        "-c",
        "ls /bin",
      );
      expect(stdout.split(/\s+/)).toEqual(expect.arrayContaining(["bash", "mkdir", "cp"]));
    });

    it("loses nothing and leaves no half-written entry when killed with SIGKILL mid-build", async () => {
      const entries = await readdir(join(dir, "storage", "images"));
      const pending = get(port, "/v2/slow/manifests/latest").catch((error: Error) => error);
      for (let attempt = 0; attempt < 600; attempt++) {
        if (
          (await invocations()).some(
            (line) => line.startsWith("nix-build") && line.includes('["slow"]'),
          )
        )
          break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect((await readdir(registryRoots)).some((name) => name.startsWith(".building-"))).toBe(
        true,
      );
      await registry.kill();
      expect(await pending).toBeInstanceOf(Error);
      // nix-build dies with the registry (pdeathsig), so it creates no root after the restart.
      let left = await processesMentioning(set.path);
      for (let attempt = 0; attempt < 100 && left.length > 0; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        left = await processesMentioning(set.path);
      }
      expect(left).toEqual([]);

      const before = await builds();
      ({ registry, port } = await startRegistryProcess("registry-restarted.log"));
      expect((await readdir(registryRoots)).sort()).toEqual(
        entries.map((file) => file.replace(/\.json$/, "")).sort(),
      );
      expect(await readdir(join(dir, "storage", "images"))).toEqual(entries);
      expect(await readdir(join(dir, "storage", "tmp"))).toEqual([]);
      const again = await get(port, "/v2/hello/busybox/manifests/latest");
      expect(again.status).toBe(200);
      expect(await builds()).toBe(before);
    });
  },
);
