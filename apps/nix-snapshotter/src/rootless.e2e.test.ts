import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import {
  appendFile,
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { containerdSkipReason, findContainerd } from "@nix-snapshotter/containerd-client/testing";
import { type BuiltImage, buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import { withLayerAnnotations } from "@nix-snapshotter/image-builder/testing";
import {
  type BinaryCache,
  createNixFixtures,
  HOST_BUILD_OPTIONS,
  type NixFixtures,
  nixE2eSkipReason,
  type ScriptFixture,
  startBinaryCache,
} from "@nix-snapshotter/nix-store/testing";
import { parse as parseToml } from "smol-toml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { otherUsersStage } from "./testing/other-users.js";

/**
 * Rootless: an unprivileged user with subordinate ids runs scripts/rootless/start.sh, which starts
 * containerd 2.1 and the daemon in one rootlesskit namespace. The Nix store is root's; a root
 * `nix-daemon` on a private socket (NIX_DAEMON_SOCKET_PATH) is the user's way to it, and that
 * daemon substitutes the image's missing paths from a binary cache on 127.0.0.1.
 */

const here = dirname(fileURLToPath(import.meta.url));
const repository = join(here, "..", "..", "..");
// What the user runs, from where the user can read it (the checkout may be closed to them).
const staged = otherUsersStage(repository);
const startScript = join(staged.repo, "scripts", "rootless", "start.sh");
const nsenterScript = join(staged.repo, "scripts", "rootless", "nsenter.sh");
const mainScript = join(staged.repo, "apps", "nix-snapshotter", "dist", "main.js");
const user = "nixsnap-rootless";
const hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function missingPrograms(programs: readonly string[]): string[] {
  return programs.filter(
    (program) =>
      spawnSync("sh", ["-c", `command -v ${program}`], { env: { PATH: hostPath } }).status !== 0,
  );
}

function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (to create the user and run nix-daemon)";
  const missing = missingPrograms([
    "rootlesskit",
    "slirp4netns",
    "newuidmap",
    "newgidmap",
    "nsenter",
    "nix-daemon",
    "useradd",
    "setfacl",
  ]);
  if (missing.length > 0)
    return `missing ${missing.join(", ")} (uidmap, rootlesskit, slirp4netns, acl)`;
  if (!existsSync(mainScript)) return "apps/nix-snapshotter is not built";
  return nixE2eSkipReason(["nix-store", "nix", "patchelf"]) ?? containerdSkipReason("2.1");
}

const skip = skipReason();
const fuseMissing = missingPrograms(["fuse-overlayfs", "mount.fuse3"]);
const containerd17Missing = skip === undefined ? containerdSkipReason("1.7") : undefined;

/** Creates the user once, with a subordinate id range; returns uid and gid. */
async function ensureUser(): Promise<{ uid: number; gid: number; home: string }> {
  if (spawnSync("id", ["-u", user]).status !== 0) {
    const created = spawnSync("useradd", ["--create-home", "--shell", "/bin/sh", user], {
      encoding: "utf8",
    });
    if (created.status !== 0) throw new Error(`useradd: ${created.stderr}`);
  }
  for (const file of ["/etc/subuid", "/etc/subgid"]) {
    const text = existsSync(file) ? await readFile(file, "utf8") : "";
    if (!text.split("\n").some((line) => line.startsWith(`${user}:`))) {
      await appendFile(file, `${user}:300000:65536\n`);
    }
  }
  const uid = Number(spawnSync("id", ["-u", user], { encoding: "utf8" }).stdout.trim());
  const gid = Number(spawnSync("id", ["-g", user], { encoding: "utf8" }).stdout.trim());
  return { uid, gid, home: `/home/${user}` };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** One configuration of scripts/rootless/start.sh (its environment) run by the suite. */
interface Configuration {
  name: string;
  containerd: "2.1" | "1.7";
  /**
   * `start.sh` (default), or the home-manager module's own programs (built with nix-build from
   * nix/modules through the nix tests' stand-in nixpkgs) run the way its systemd units would.
   */
  programs?: "home-manager";
  env: Record<string, string>;
  /** Devices the user must open (root's 0600 here; 0666 on ordinary distributions). */
  devices: string[];
  /** The mount type expected for a container's snapshot. */
  overlayType: "overlay" | "fuse3.fuse-overlayfs";
  hostile: boolean;
  skip?: string;
}

const configurations: Configuration[] = [
  {
    // The defaults: bind mode (the daemon's), kernel overlay, slirp4netns.
    name: "bind mode, kernel overlay, slirp4netns (the defaults)",
    containerd: "2.1",
    env: {},
    devices: ["/dev/net/tun"],
    overlayType: "overlay",
    hostile: true,
  },
  {
    name: "hardlink mode, host network",
    containerd: "2.1",
    env: { MOUNT_MODE: "hardlink", ROOTLESSKIT_NET: "host" },
    devices: [],
    overlayType: "overlay",
    hostile: false,
  },
  {
    name: "bind mode over fuse-overlayfs, host network",
    containerd: "2.1",
    env: { FUSE_OVERLAYFS: "true", ROOTLESSKIT_NET: "host" },
    devices: ["/dev/fuse"],
    overlayType: "fuse3.fuse-overlayfs",
    hostile: false,
    ...(fuseMissing.length > 0 ? { skip: `missing ${fuseMissing.join(", ")}` } : {}),
  },
  {
    // What the home-manager module's containerd.service and nix-snapshotter.service run, with
    // the module's defaults (slirp4netns, bind mode, its rendered configs).
    name: "the home-manager module's units (its defaults)",
    containerd: "2.1",
    programs: "home-manager",
    env: {},
    devices: ["/dev/net/tun"],
    overlayType: "overlay",
    hostile: false,
  },
  {
    // The same start.sh and config (version 2) with containerd 1.7.
    name: "containerd 1.7, bind mode, host network",
    containerd: "1.7",
    env: { ROOTLESSKIT_NET: "host" },
    devices: [],
    overlayType: "overlay",
    hostile: false,
    ...(containerd17Missing ? { skip: containerd17Missing } : {}),
  },
];

/** The home-manager module's programs, as its units run them. */
interface ModulePrograms {
  /** containerd.service's ExecStart (rootlesskit and containerd). */
  launcher: string;
  /** nix-snapshotter.service's ExecStart, split into words. */
  snapshotter: string[];
  /** nix-snapshotter.service's Environment (`NAME=value`). */
  snapshotterEnvironment: string[];
  /** The configs the module rendered, parsed. */
  configs: GeneratedConfigs;
}

/** containerd's and the daemon's configs, parsed. */
interface GeneratedConfigs {
  containerd: Record<string, unknown>;
  snapshotter: Record<string, unknown>;
}

/**
 * Builds the home-manager modules (nix/modules/home) for `user` with the nix tests' stand-in
 * nixpkgs (nix/tests/modules.nix: host programs, the workspace's daemon), containerd `version`'s
 * binaries as `virtualisation.containerd.rootless.package`. `outLink` roots the result.
 */
async function buildModulePrograms(
  containerdDir: string,
  directory: string,
  outLink: string,
): Promise<ModulePrograms> {
  const expression = join(directory, "module-programs.nix");
  await writeFile(
    expression,
    `{ node, repo, checkout, containerdDir }:
let
  pkgs = import (checkout + "/nix/tests/stand-in/pkgs.nix") { inherit node repo; };
  evaluated = import (checkout + "/nix/tests/modules.nix") {
    inherit node repo;
    kind = "home";
    module = {
      home.username = "${user}";
      virtualisation.containerd.rootless = {
        enable = true;
        nixSnapshotterIntegration = true;
        package = pkgs.hostPackage "containerd" [
          (containerdDir + "/containerd")
          (containerdDir + "/containerd-shim-runc-v2")
        ];
      };
      services.nix-snapshotter.rootless.enable = true;
    };
  };
  units = evaluated.config.systemd.user.services;
in
pkgs.runCommand "rootless-module-programs" {
  launcher = units.containerd.Service.ExecStart;
  snapshotter = units.nix-snapshotter.Service.ExecStart;
  containerdConfig = evaluated.containerdConfig;
  snapshotterConfig = evaluated.snapshotterConfig;
  environment = builtins.concatStringsSep "\n" units.nix-snapshotter.Service.Environment;
} ''
  mkdir -p "$out"
  printf '%s\n' "$launcher" > "$out/launcher"
  printf '%s\n' "$snapshotter" > "$out/snapshotter"
  printf '%s\n' "$environment" > "$out/environment"
  cp "$containerdConfig" "$out/containerd.toml"
  cp "$snapshotterConfig" "$out/nix-snapshotter.toml"
''
`,
  );
  const built = spawnSync(
    "nix-build",
    [
      expression,
      "--argstr",
      "node",
      staged.node,
      "--argstr",
      "repo",
      staged.repo,
      "--argstr",
      "checkout",
      repository,
      "--argstr",
      "containerdDir",
      containerdDir,
      "--out-link",
      outLink,
      "--option",
      "substituters",
      "",
      ...HOST_BUILD_OPTIONS,
    ],
    { encoding: "utf8", env: { ...process.env, PATH: hostPath } },
  );
  if (built.status !== 0) throw new Error(`nix-build ${expression}: ${built.stderr}`);
  const read = async (name: string) => (await readFile(join(outLink, name), "utf8")).trim();
  return {
    launcher: await read("launcher"),
    snapshotter: (await read("snapshotter")).split(" "),
    snapshotterEnvironment: (await read("environment")).split("\n"),
    configs: {
      containerd: parseToml(await read("containerd.toml")),
      snapshotter: parseToml(await read("nix-snapshotter.toml")),
    },
  };
}

/** Lets `user` read and write a device through an ACL entry; returns how to take it back. */
function grantDevice(device: string): () => void {
  const granted = spawnSync("setfacl", ["-m", `u:${user}:rw`, device], { encoding: "utf8" });
  if (granted.status !== 0) throw new Error(`setfacl ${device}: ${granted.stderr}`);
  return () => {
    spawnSync("setfacl", ["-x", `u:${user}`, device]);
    // The mask entry setfacl added; refused (and kept) while other named entries need it.
    spawnSync("setfacl", ["-x", "m::", device]);
  };
}

/** Live processes running as `uid` (the test's own user: nothing else runs as it). */
async function processesOf(uid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, "utf8").catch(() => "");
    const real = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    const zombie = /^State:\s+Z/m.test(status);
    if (real !== undefined && Number(real) === uid && !zombie) pids.push(Number(entry));
  }
  return pids;
}

describe.skipIf(skip !== undefined)(
  `rootless containerd with the daemon${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    let fixtures: NixFixtures;
    let script: ScriptFixture;
    let cache: BinaryCache;
    let missing: string[];
    let image: BuiltImage;
    let directory: string;
    let account: { uid: number; gid: number; home: string };
    let nixDaemon: ChildProcess;
    let nixDaemonSocket: string;
    let gcRootsDir: string;
    const reference = "docker.io/library/nix-rootless:latest";
    /** The configs start.sh generated, by configuration index. */
    const generated = new Map<number, GeneratedConfigs>();

    async function roots(): Promise<string[]> {
      if (!existsSync(gcRootsDir)) return [];
      const targets: string[] = [];
      for (const owner of await readdir(gcRootsDir)) {
        if (owner.startsWith(".")) continue;
        for (const name of await readdir(join(gcRootsDir, owner))) {
          targets.push(await readlink(join(gcRootsDir, owner, name)));
        }
      }
      return targets.sort();
    }

    beforeAll(async () => {
      account = await ensureUser();
      fixtures = await createNixFixtures({ label: "rootless" });
      script = await fixtures.script();
      const synthetic = await fixtures.syntheticClosure({ count: 3, closureInfo: false });
      missing = synthetic.paths;
      image = await buildImage({
        config: { Entrypoint: [script.executable] },
        closure: [...script.closure, ...missing],
      });
      cache = await startBinaryCache({ paths: missing });
      await synthetic.release();
      await fixtures.deletePaths(missing);

      directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-rootless-"));
      await chmod(directory, 0o755);
      const archive = join(directory, "image.tar");
      await writeFile(archive, writeImageArchive(image, { names: [reference] }));
      await chmod(archive, 0o644);

      // The user's roots: a directory of theirs under gcroots/per-user (made by root, as Nix's
      // own profile setup does).
      const perUser = `/nix/var/nix/gcroots/per-user/${user}`;
      await mkdir(perUser, { recursive: true });
      await chown(perUser, account.uid, account.gid);
      gcRootsDir = join(perUser, "nix-snapshotter");
      await rm(gcRootsDir, { recursive: true, force: true });

      // Root's nix-daemon on a private socket; it substitutes from the cache.
      const socketDir = join(directory, "nix-daemon");
      await mkdir(socketDir);
      await chmod(socketDir, 0o755);
      nixDaemonSocket = join(socketDir, "socket");
      const options = Object.entries(cache.nixOptions).flatMap(([name, value]) => [
        "--option",
        name,
        value,
      ]);
      nixDaemon = spawn("nix-daemon", options, {
        env: { ...process.env, NIX_DAEMON_SOCKET_PATH: nixDaemonSocket },
        stdio: "ignore",
      });
      for (let attempt = 0; attempt < 100 && !existsSync(nixDaemonSocket); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    });

    afterAll(async () => {
      if (nixDaemon && nixDaemon.exitCode === null) {
        const exited = new Promise((resolve) => nixDaemon.once("exit", resolve));
        nixDaemon.kill("SIGTERM");
        await exited;
      }
      await cache?.close();
      if (gcRootsDir) await rm(gcRootsDir, { recursive: true, force: true });
      if (missing) await fixtures?.deletePaths(missing).catch(() => {});
      await fixtures?.cleanup();
      if (directory) await rm(directory, { recursive: true, force: true });
    });

    for (const [index, configuration] of configurations.entries()) {
      describe.skipIf(configuration.skip !== undefined)(
        `${configuration.name}${configuration.skip ? ` (skipped: ${configuration.skip})` : ""}`,
        () => {
          let home: string;
          let env: NodeJS.ProcessEnv;
          const stacks: ChildProcess[] = [];
          let programs: ModulePrograms | undefined;
          let stackLog = "";
          const revokes: Array<() => void> = [];

          /** Runs a command as the user, inside the stack's namespaces when `inside`. */
          function asUser(command: string[], inside: boolean): Promise<Run> {
            const full = inside ? [nsenterScript, ...command] : command;
            return new Promise((resolve, reject) => {
              const child = spawn(full[0] as string, full.slice(1), {
                uid: account.uid,
                gid: account.gid,
                env,
                cwd: home,
              });
              let stdout = "";
              let stderr = "";
              child.stdout.on("data", (chunk) => {
                stdout += chunk;
              });
              child.stderr.on("data", (chunk) => {
                stderr += chunk;
              });
              child.on("error", reject);
              child.on("close", (code) => resolve({ code, stdout, stderr }));
            });
          }

          async function ctr(...args: string[]): Promise<string> {
            const address = join(home, "run", "containerd", "containerd.sock");
            const ctrBinary = join(findContainerd(configuration.containerd).bins?.dir ?? "", "ctr");
            const result = await asUser([ctrBinary, "--address", address, ...args], true);
            if (result.code !== 0) {
              throw new Error(
                `ctr ${args.join(" ")}: ${result.stderr}\n--- stack log ---\n${stackLog}`,
              );
            }
            return result.stdout;
          }

          beforeAll(async () => {
            // Every configuration substitutes the missing paths afresh.
            await fixtures.deletePaths(missing.filter((path) => existsSync(path)));
            home = join(directory, `stack-${index}`);
            await mkdir(home);
            await chmod(home, 0o755);
            for (const sub of ["run", "data", "config"]) {
              await mkdir(join(home, sub));
              await chown(join(home, sub), account.uid, account.gid);
            }
            await chmod(join(home, "run"), 0o700);
            for (const device of configuration.devices) revokes.push(grantDevice(device));

            const bins = findContainerd(configuration.containerd).bins;
            env = {
              PATH: `${hostPath}:${bins?.dir ?? ""}`,
              HOME: account.home,
              USER: user,
              XDG_RUNTIME_DIR: join(home, "run"),
              XDG_DATA_HOME: join(home, "data"),
              XDG_CONFIG_HOME: join(home, "config"),
              NIX_DAEMON_SOCKET_PATH: nixDaemonSocket,
              CONTAINERD: bins?.containerd ?? "containerd",
              NIX_SNAPSHOTTER: `${staged.node} ${mainScript}`,
              NIX_SNAPSHOTTER_LOG_FORMAT: "json",
              ...configuration.env,
            };
            const spawnAsUser = (command: string[], extra: NodeJS.ProcessEnv = {}) => {
              const child = spawn(command[0] as string, command.slice(1), {
                uid: account.uid,
                gid: account.gid,
                env: { ...env, ...extra },
                cwd: home,
                detached: true,
              });
              child.stdout?.on("data", (chunk) => {
                stackLog += chunk;
              });
              child.stderr?.on("data", (chunk) => {
                stackLog += chunk;
              });
              stacks.push(child);
              return child;
            };
            const waitFor = async (paths: string[]) => {
              for (
                let attempt = 0;
                attempt < 300 &&
                stacks.every((child) => child.exitCode === null) &&
                !paths.every((path) => existsSync(path));
                attempt++
              ) {
                await new Promise((resolve) => setTimeout(resolve, 100));
              }
              if (!paths.every((path) => existsSync(path))) {
                throw new Error(`the rootless stack did not start:\n${stackLog}`);
              }
            };
            const containerdReady = [
              join(home, "run", "containerd", "containerd.sock"),
              join(home, "run", "containerd-rootless", "child_pid"),
            ];
            const snapshotterReady = [join(home, "run", "nix-snapshotter", "nix-snapshotter.sock")];
            if (configuration.programs === "home-manager") {
              // containerd.service, then nix-snapshotter.service (After=containerd.service).
              programs = await buildModulePrograms(
                bins?.dir ?? "",
                home,
                join(fixtures.rootsDir, `module-programs-${index}`),
              );
              spawnAsUser([programs.launcher]);
              await waitFor(containerdReady);
              const unitEnvironment = Object.fromEntries(
                programs.snapshotterEnvironment.map((line) => [
                  line.slice(0, line.indexOf("=")),
                  line.slice(line.indexOf("=") + 1),
                ]),
              );
              // The stand-in's coreutils is the host's: keep the host's directories after the
              // unit's PATH (with nixpkgs, coreutils is in the programs' own PATH).
              unitEnvironment.PATH = `${unitEnvironment.PATH ?? ""}:${hostPath}`;
              spawnAsUser(programs.snapshotter, unitEnvironment);
              await waitFor(snapshotterReady);
            } else {
              spawnAsUser([startScript]);
              await waitFor([...containerdReady, ...snapshotterReady]);
              const configDir = join(home, "config", "nix-snapshotter");
              generated.set(index, {
                containerd: parseToml(await readFile(join(configDir, "containerd.toml"), "utf8")),
                snapshotter: parseToml(await readFile(join(configDir, "config.toml"), "utf8")),
              });
            }
          });

          if (configuration.programs === "home-manager") {
            it("renders the configs start.sh writes with its defaults", () => {
              const script = generated.get(0);
              expect(script, "the start.sh defaults ran first").toBeDefined();
              const module = structuredClone(programs?.configs);
              // Known differences: nixpkgs' CNI plugins directory (start.sh keeps containerd's
              // default), and the daemon's defaults that start.sh spells out.
              const plugins = module?.containerd.plugins as Record<string, Record<string, unknown>>;
              expect(plugins["io.containerd.grpc.v1.cri"]?.cni).toBeDefined();
              delete plugins["io.containerd.grpc.v1.cri"]?.cni;
              const spelled = structuredClone(script?.snapshotter) ?? {};
              expect(spelled.mount_mode).toBe("bind");
              expect(spelled.fuse_overlayfs).toBe(false);
              delete spelled.mount_mode;
              delete spelled.fuse_overlayfs;
              expect(module?.containerd).toEqual(script?.containerd);
              expect(module?.snapshotter).toEqual(spelled);
            });
          }

          afterAll(async () => {
            // Like systemd stopping the units: the snapshotter, then containerd; each its group.
            for (const child of stacks.splice(0).reverse()) {
              if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) {
                continue;
              }
              const exited = new Promise((resolve) => child.once("exit", resolve));
              try {
                process.kill(-child.pid, "SIGTERM");
              } catch {}
              await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))]);
            }
            // Whatever the stack left (a shim after a failed run, fuse-overlayfs): the user's
            // processes are all this test's. Their mounts go with the namespace.
            for (let attempt = 0; account && attempt < 50; attempt++) {
              const left = await processesOf(account.uid);
              if (left.length === 0) break;
              for (const pid of left) {
                try {
                  process.kill(pid, "SIGKILL");
                } catch {}
              }
              await new Promise((resolve) => setTimeout(resolve, 100));
            }
            for (const revoke of revokes.splice(0)) revoke();
            if (gcRootsDir) await rm(gcRootsDir, { recursive: true, force: true });
            if (home) await rm(home, { recursive: true, force: true, maxRetries: 3 });
          });

          it("runs as the user inside a user namespace", async () => {
            const inside = await asUser(["cat", "/proc/self/uid_map"], true);
            expect(inside.stdout).toMatch(new RegExp(`^\\s*0\\s+${account.uid}\\s+1\\s*$`, "m"));
          });

          it("imports a nix image whose missing paths come from the binary cache, rooted per user", async () => {
            for (const path of missing) expect(existsSync(path)).toBe(false);
            const before = cache.requests();
            // 1.7's ctr unpacks client-side, without the layers' labels, unless told to use the
            // Transfer service (docs/containerd.md).
            const transfer = configuration.containerd === "1.7" ? ["--local=false"] : [];
            await ctr(
              "images",
              "import",
              ...transfer,
              "--snapshotter",
              "nix",
              join(directory, "image.tar"),
            );
            for (const path of missing) expect(existsSync(path)).toBe(true);
            expect(cache.requests()).toBeGreaterThan(before);
            expect(await roots()).toEqual([...script.closure, ...missing].sort());
          });

          it("ctr run prints the output of a program that lives only in the Nix store", async () => {
            // No cgroup: an unprivileged user cannot create one on this cgroup v1 host.
            const stdout = await ctr(
              "run",
              "--rm",
              "--cgroup",
              "",
              "--cpu-shares",
              "0",
              "--snapshotter",
              "nix",
              reference,
              `rootless-hello-${index}`,
            );
            expect(stdout.trim()).toBe("hello from nix store");
          });

          it("mounts the container's snapshot the rootless way", async () => {
            const listing = await ctr("snapshots", "--snapshotter", "nix", "ls");
            const parent = /^(sha256:[0-9a-f]{64})\s+/m.exec(listing)?.[1];
            expect(parent).toBeDefined();
            const mounts = await ctr(
              "snapshots",
              "--snapshotter",
              "nix",
              "prepare",
              "--mounts",
              "rootless-mounts",
              parent as string,
            );
            try {
              const parsed = JSON.parse(mounts) as Array<{
                Type: string;
                Target?: string;
                Options: string[];
              }>;
              const overlay = parsed[0];
              expect(overlay?.Type).toBe(configuration.overlayType);
              // uid 0 of a user namespace is not the host's root: the kernel's overlay needs
              // userxattr (fuse-overlayfs takes no such option).
              if (configuration.overlayType === "overlay") {
                expect(overlay?.Options).toContain("userxattr");
              } else {
                expect(overlay?.Options).not.toContain("userxattr");
              }
              const targets = parsed.slice(1).map((mount) => mount.Target);
              if ((configuration.env.MOUNT_MODE ?? "bind") === "bind") {
                expect(targets.sort()).toEqual([...script.closure, ...missing].sort());
              } else {
                expect(targets).toEqual([]);
              }
            } finally {
              await ctr("snapshots", "--snapshotter", "nix", "rm", "rootless-mounts");
            }
          });

          it("releases the user's roots when the image is removed", async () => {
            await ctr("images", "remove", "--sync", reference);
            let left = await roots();
            for (let attempt = 0; attempt < 300 && left.length > 0; attempt++) {
              await new Promise((resolve) => setTimeout(resolve, 100));
              left = await roots();
            }
            expect(left).toEqual([]);
          });

          if (!configuration.hostile) return;
          it("then refuses an image whose store-path label names a host directory, rooting nothing", async () => {
            // After the honest image is gone (its snapshot too), so the hostile one is
            // unpacked afresh.
            const hostile = withLayerAnnotations(image, {
              "containerd.io/snapshot/nix-layer": "true",
              "containerd.io/snapshot/nix-store-path.0": "/etc",
            });
            const archive = join(home, "hostile.tar");
            await writeFile(
              archive,
              writeImageArchive(hostile, { names: ["docker.io/library/hostile:latest"] }),
            );
            await chmod(archive, 0o644);
            await expect(ctr("images", "import", "--snapshotter", "nix", archive)).rejects.toThrow(
              /InvalidArgument|invalid|store path/i,
            );
            expect(await roots()).toEqual([]);
          });
        },
      );
    }
  },
);
