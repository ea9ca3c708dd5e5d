// End-to-end tests of the Nix interface (flake.nix, default.nix, nix/): every .nix file parses;
// the NixOS and home-manager modules evaluate (against the stand-in module system in
// nix/tests/stand-in, since no nixpkgs can be fetched here); buildImage builds a real image with
// the workspace's nix2container; the rendered containerd and nix-snapshotter configs are accepted
// by the real programs.
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, realpathSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { otherUsersStage } from "../../apps/nix-snapshotter/src/testing/other-users.js";

const run = promisify(execFile);

const testsDir = dirname(fileURLToPath(import.meta.url));
const repo = resolve(testsDir, "../..");
const nix2containerMain = join(repo, "apps/nix2container/dist/main.js");
const daemonMain = join(repo, "apps/nix-snapshotter/dist/main.js");
const gcRootsBase = "/nix/var/nix/gcroots/nix-snapshotter-tests";
/** Node and the built apps where Nix build users can run them (the stand-in's nix-snapshotter). */
const staged = otherUsersStage(repo);

function hasProgram(path: string): boolean {
  return existsSync(path);
}

const isRoot = process.getuid?.() === 0;

/** Whether the workspace's nix2container is built and has the command, implemented. */
function cliHasCommand(command: string): boolean {
  if (!existsSync(nix2containerMain)) return false;
  const result = spawnSync(process.execPath, [nix2containerMain, command, "--help"], {
    encoding: "utf8",
  });
  const help = result.stdout.replaceAll(/\s+/g, " ");
  return (
    result.status === 0 &&
    help.startsWith(`Usage: nix2container ${command} `) &&
    !help.includes("not implemented")
  );
}

const hasNix = hasProgram("/usr/bin/nix-instantiate") && hasProgram("/usr/bin/nix-build");
const hasContainerd = hasProgram("/usr/bin/containerd") && hasProgram("/usr/bin/ctr");
const hasSkopeo = hasProgram("/usr/bin/skopeo");

/**
 * Appended to every nix-build: the stand-in nixpkgs (stand-in/pkgs.nix) builds with the host's
 * /bin/sh and programs, which a sandboxed build does not see (Nix 2.26 on Debian 13 sandboxes by
 * default; Debian 12's nix.conf says `sandbox = false`). The same options as the fixtures'
 * HOST_BUILD_OPTIONS (@nix-snapshotter/nix-store/testing).
 */
const hostBuildOptions = ["--option", "sandbox", "false"];

/** Runs a program; resolves with stdout, rejects with an error carrying stderr. */
async function exec(
  file: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<string> {
  if (file === "nix-build") args = [...args, ...hostBuildOptions];
  try {
    const { stdout } = await run(file, args, {
      cwd: options.cwd ?? testsDir,
      env: options.env ?? process.env,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (error) {
    const failure = error as Error & { stderr?: string };
    throw new Error(`${file} ${args.join(" ")} failed: ${failure.stderr ?? failure.message}`);
  }
}

/** Expects a command to fail and returns its stderr. */
async function execFailure(file: string, args: string[]): Promise<string> {
  try {
    await run(file, args, { cwd: testsDir, maxBuffer: 64 * 1024 * 1024 });
  } catch (error) {
    return (error as { stderr?: string }).stderr ?? String(error);
  }
  throw new Error(`${file} ${args.join(" ")} succeeded but was expected to fail`);
}

/** The value with every object's keys sorted, as `jq --sort-keys` writes it. */
function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, sortKeys((value as Record<string, unknown>)[key])]),
  );
}

function nixString(value: string): string {
  return JSON.stringify(value).replaceAll("${", "\\${");
}

/** `--arg`s shared by nix/tests/images.nix and nix/tests/modules.nix. */
function baseArgs(): string[] {
  return ["--argstr", "node", staged.node, "--argstr", "repo", staged.repo];
}

/** The bin directory of a newer containerd from Debian's newer suites (cached), or undefined. */
/** `1.7` for the system's `containerd --version` 1.7.24 (Debian 13), `1.6` on Debian 12. */
function systemContainerdRelease(): string | undefined {
  const printed = spawnSync("/usr/bin/containerd", ["--version"], { encoding: "utf8" });
  return /\sv?(\d+\.\d+)\.\d+/.exec(printed.stdout ?? "")?.[1];
}

/** The directory of containerd `release`'s binaries: the system's, else Debian's package of `suite`. */
function containerdBin(release: string, suite: "bookworm" | "trixie" | "sid"): string | undefined {
  if (systemContainerdRelease() === release) return "/usr/bin";
  return fetchContainerd(suite);
}

function fetchContainerd(suite: "bookworm" | "trixie" | "sid"): string | undefined {
  const fetched = spawnSync("bash", [join(repo, "scripts/fetch-containerd.sh"), suite], {
    encoding: "utf8",
  });
  const bin = fetched.stdout.trim();
  return fetched.status === 0 && existsSync(join(bin, "containerd")) ? bin : undefined;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

/** Builds are local: no binary cache is reachable from the test machines. */
const offline = ["--option", "substituters", ""];

async function evalJson<T>(file: string, attribute: string, extra: string[] = []): Promise<T> {
  const stdout = await exec("nix-instantiate", [
    "--eval",
    "--strict",
    "--json",
    join(testsDir, file),
    "-A",
    attribute,
    ...baseArgs(),
    ...extra,
  ]);
  return JSON.parse(stdout) as T;
}

async function listNixFiles(): Promise<string[]> {
  const files = [join(repo, "flake.nix"), join(repo, "default.nix")];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.name.endsWith(".nix")) files.push(path);
    }
  };
  await walk(join(repo, "nix"));
  return files;
}

interface Unit {
  description: string;
  wantedBy: string[];
  after: string[];
  before: string[];
  wants: string[];
  partOf: string[];
  path: string[];
  serviceConfig: Record<string, unknown>;
  unitConfig: Record<string, unknown>;
}

interface Summary {
  units: Record<string, Unit>;
  userUnits: Record<string, Record<string, Record<string, unknown>>>;
  options: { name: string; description: string; declarations: string[] }[];
  extraInit: string;
  containerdArgs: Record<string, string>;
  k3sFlags: string;
}

function moduleArg(module: string): string[] {
  return ["--arg", "module", module];
}

describe.skipIf(!hasNix)("nix interface: parsing and evaluation (needs nix-instantiate)", () => {
  it("parses every .nix file", async () => {
    const files = await listNixFiles();
    expect(files.length).toBeGreaterThan(20);
    for (const file of files) {
      await expect(
        exec("nix-instantiate", ["--parse", file]),
        relative(repo, file),
      ).resolves.toBeTypeOf("string");
    }
    // The check itself can fail: a broken expression does not parse.
    expect(await execFailure("nix-instantiate", ["--parse", "-E", "{ a = ; }"])).toMatch(/syntax/);
  });

  it("exposes the flake's outputs and the same ones through default.nix", async () => {
    const flake = await exec("nix-instantiate", [
      "--eval",
      "--strict",
      "--json",
      "-E",
      `let f = import ${nixString(join(repo, "flake.nix"))};
           outputs = f.outputs { self = outputs; nixpkgs = { lib.genAttrs = names: f: { }; }; };
       in { outputs = builtins.attrNames outputs;
            nixos = builtins.attrNames outputs.nixosModules;
            home = builtins.attrNames outputs.homeModules;
            lib = builtins.attrNames outputs.lib;
            overlay = builtins.isFunction outputs.overlays.default; }`,
    ]);
    const parsed = JSON.parse(flake) as Record<string, unknown>;
    expect(parsed.outputs).toEqual(
      expect.arrayContaining([
        "packages",
        "overlays",
        "nixosModules",
        "homeModules",
        "lib",
        "apps",
        "checks",
        "devShells",
        "k8sResources",
      ]),
    );
    expect(parsed.nixos).toEqual(
      expect.arrayContaining([
        "default",
        "nix-snapshotter",
        "nix-snapshotter-rootless",
        "containerd",
        "containerd-rootless",
        "preload-containerd",
        "preload-containerd-rootless",
        "k3s",
        "nix-registry",
      ]),
    );
    expect(parsed.home).toEqual(
      expect.arrayContaining(["default", "nix-snapshotter-rootless", "containerd-rootless"]),
    );
    expect(parsed.lib).toEqual(expect.arrayContaining(["buildImageWith", "ociPlatform"]));
    expect(parsed.overlay).toBe(true);

    const legacy = JSON.parse(
      await exec("nix-instantiate", [
        "--eval",
        "--strict",
        "--json",
        "-E",
        `builtins.attrNames (import ${nixString(join(repo, "default.nix"))}).nixosModules`,
      ]),
    ) as string[];
    expect(legacy).toEqual(parsed.nixos);
  });

  it("evaluates the package with either nixpkgs pnpm API and filters its source", async () => {
    interface PackageFacts {
      pname: string;
      srcFiles: string[];
      pnpmDeps: { kind: string; fetcherVersion: number; hash: string };
      configHook: string;
      buildPhase: string;
      installPhase: string;
      buildImage: boolean;
      mainProgram: string;
    }
    const evaluate = async (newNixpkgs: boolean) =>
      JSON.parse(
        await exec("nix-instantiate", [
          "--read-write-mode",
          "--eval",
          "--strict",
          "--json",
          join(testsDir, "package.nix"),
          ...baseArgs(),
          "--arg",
          "newNixpkgs",
          String(newNixpkgs),
        ]),
      ) as PackageFacts;
    const old = await evaluate(false);
    expect([old.pnpmDeps.kind, old.configHook]).toEqual([
      "pnpm_10.fetchDeps",
      "pnpm_10.configHook",
    ]);
    const current = await evaluate(true);
    expect([current.pnpmDeps.kind, current.configHook]).toEqual([
      "fetchPnpmDeps",
      "pnpmConfigHook",
    ]);
    expect(current.pnpmDeps.fetcherVersion).toBe(2);
    expect(current.pnpmDeps.hash).toMatch(/^sha256-[A-Za-z0-9+/]{43}=$/);
    expect(current.buildImage).toBe(true);
    expect(current.mainProgram).toBe("nix-snapshotter");
    // The workspace is there, build outputs and local installs are not.
    expect(current.srcFiles).toEqual(
      expect.arrayContaining([
        "package.json",
        "pnpm-lock.yaml",
        "pnpm-workspace.yaml",
        "tsup.base.ts",
        "apps/nix-snapshotter/package.json",
        "apps/nix2container/package.json",
        "packages/snapshotter/package.json",
      ]),
    );
    expect(
      current.srcFiles.filter((file) => /(^|\/)(node_modules|dist|\.turbo|\.git)\//.test(file)),
    ).toEqual([]);
    expect(
      current.srcFiles.some((file) => file.startsWith("docs/") || file.startsWith("nix/")),
    ).toBe(false);
    expect(current.buildPhase).toContain(
      '--filter "nix-snapshotter..." --filter "nix2container..."',
    );
    expect(current.installPhase).toMatch(/apps\/\$app\/dist\/main\.js/);
  });

  it("documents every option of our modules", async () => {
    for (const kind of ["nixos", "home"]) {
      const summary = await evalJson<Summary>("modules.nix", "summary", ["--argstr", "kind", kind]);
      const ours = summary.options.filter((option) =>
        option.declarations.some((file) => file.includes("/nix/modules/")),
      );
      expect(ours.length, kind).toBeGreaterThan(kind === "nixos" ? 50 : 25);
      const undocumented = ours.filter((option) => option.description.trim() === "");
      expect(undocumented.map((option) => option.name)).toEqual([]);
      // The Go project's option names are all there.
      const names = ours.map((option) => option.name);
      const expected =
        kind === "nixos"
          ? [
              "services.nix-snapshotter.enable",
              "services.nix-snapshotter.package",
              "services.nix-snapshotter.path",
              "services.nix-snapshotter.settings",
              "services.nix-snapshotter.configFile",
              "services.nix-snapshotter.settings.mount_mode",
              "services.nix-snapshotter.rootless.enable",
              "virtualisation.containerd.nixSnapshotterIntegration",
              "virtualisation.containerd.k3sIntegration",
              "virtualisation.containerd.gVisorIntegration",
              "virtualisation.containerd.setSnapshotter",
              "virtualisation.containerd.rootless.enable",
              "virtualisation.containerd.rootless.nixSnapshotterIntegration",
              "services.preload-containerd.targets",
              "services.preload-containerd.rootless.targets",
              "services.k3s.moreFlags",
              "services.k3s.snapshotter",
              "services.nix-registry.enable",
              "services.nix-registry.package",
              "services.nix-registry.user",
              "services.nix-registry.openFirewall",
              "services.nix-registry.settings.port",
              "services.nix-registry.settings.pkgs_repo",
              "services.nix-registry.settings.nix_timeout",
              "services.nix-registry.settings.binary_cache_secret_key_file",
            ]
          : [
              "services.nix-snapshotter.rootless.enable",
              "services.nix-snapshotter.rootless.settings.mount_mode",
              "virtualisation.containerd.rootless.enable",
              "virtualisation.containerd.rootless.nixSnapshotterIntegration",
              "virtualisation.containerd.rootless.bindMounts",
            ];
      expect(names).toEqual(expect.arrayContaining(expected));
    }
  });

  it("renders the NixOS units, containerd integration and k3s flags", async () => {
    const summary = await evalJson<Summary>(
      "modules.nix",
      "summary",
      moduleArg(`{ pkgs, ... }: {
        virtualisation.containerd = { enable = true; nixSnapshotterIntegration = true; k3sIntegration = true; };
        services.nix-snapshotter = { enable = true; settings = { mount_mode = "hardlink"; fuse_overlayfs = true; }; };
        services.k3s.enable = true;
        services.preload-containerd = { enable = true; targets = [ { archives = [ (pkgs.writeText "archive.tar" "x") ]; namespace = "k8s.io"; } ]; };
      }`),
    );
    const unit = summary.units["nix-snapshotter"];
    expect(unit).toBeDefined();
    expect(unit?.serviceConfig).toMatchObject({
      Type: "notify",
      NotifyAccess: "all",
      Restart: "always",
    });
    expect(String(unit?.serviceConfig.ExecStart)).toMatch(
      /^\/nix\/store\/[a-z0-9]{32}-nix-snapshotter-host\/bin\/nix-snapshotter --config \/nix\/store\/[a-z0-9]{32}-nix-snapshotter\.toml$/,
    );
    expect(unit?.wantedBy).toEqual(["multi-user.target"]);
    expect(unit?.partOf).toEqual(["containerd.service"]);
    // nix on PATH by default, fuse-overlayfs added because the settings ask for it.
    expect(unit?.path.map((path) => path.replace(/^\/nix\/store\/[a-z0-9]{32}-/, ""))).toEqual([
      "nix",
      "systemd",
      "fuse-overlayfs",
    ]);
    expect(summary.units.containerd?.after).toContain("nix-snapshotter.service");
    expect(summary.k3sFlags.split(" --")).toEqual([
      "--container-runtime-endpoint unix:///run/containerd/containerd.sock",
      "image-service-endpoint unix:///run/nix-snapshotter/nix-snapshotter.sock",
      "snapshotter overlayfs",
    ]);
    expect(summary.extraInit).toContain('export CONTAINERD_SNAPSHOTTER="nix"');
    expect(summary.extraInit).toContain('export CONTAINERD_NAMESPACE="k8s.io"');
    const preload = summary.units["preload-containerd"];
    expect(preload?.serviceConfig).toMatchObject({ Type: "oneshot", RemainAfterExit: true });
    expect(String(preload?.serviceConfig.ExecStart)).toMatch(
      /^\/nix\/store\/[a-z0-9]{32}-preload-containerd\/bin\/preload-containerd$/,
    );
  });

  it("renders the NixOS rootless user units and the gVisor runtime", async () => {
    const summary = await evalJson<Summary>(
      "modules.nix",
      "summary",
      moduleArg(`{ pkgs, ... }: {
        virtualisation.containerd = { enable = true; gVisorIntegration = true; };
        virtualisation.containerd.rootless = { enable = true; nixSnapshotterIntegration = true; };
        services.nix-snapshotter.rootless = { enable = true; logLevel = "warn"; };
        services.preload-containerd.rootless = { enable = true; targets = [ { archives = [ (pkgs.writeText "archive.tar" "x") ]; } ]; };
      }`),
    );
    const user = summary.userUnits as unknown as Record<string, Unit>;
    expect(user["nix-snapshotter"]?.serviceConfig).toMatchObject({
      Type: "notify",
      Restart: "always",
    });
    expect(String(user["nix-snapshotter"]?.serviceConfig.ExecStart)).toMatch(
      /-containerd-nsenter\/bin\/containerd-nsenter \S+\/bin\/nix-snapshotter --config \S+ --log-level warn$/,
    );
    expect(user["nix-snapshotter"]?.wantedBy).toEqual(["default.target"]);
    expect(user["nix-snapshotter"]?.unitConfig).toMatchObject({ After: ["containerd.service"] });
    expect(String(user.containerd?.serviceConfig.ExecStart)).toMatch(
      /-containerd-rootless\/bin\/containerd-rootless$/,
    );
    expect(user["preload-containerd"]?.wantedBy).toEqual(["default.target"]);
    const containerd = await evalJson<Record<string, unknown>>(
      "modules.nix",
      "config.virtualisation.containerd.settings",
      moduleArg(`{ virtualisation.containerd = { enable = true; gVisorIntegration = true; }; }`),
    );
    expect(containerd).toMatchObject({
      version: 2,
      plugins: {
        "io.containerd.grpc.v1.cri": {
          containerd: {
            default_runtime_name: "runc",
            runtimes: { runsc: { runtime_type: "io.containerd.runsc.v1" } },
          },
        },
      },
    });
    // No nix settings unless asked for.
    expect(JSON.stringify(containerd)).not.toContain("proxy_plugins");
  });

  it("renders the home-manager units for rootless use", async () => {
    const summary = await evalJson<Summary>("modules.nix", "summary", [
      "--argstr",
      "kind",
      "home",
      ...moduleArg(`{
        virtualisation.containerd.rootless = { enable = true; nixSnapshotterIntegration = true; };
        services.nix-snapshotter.rootless.enable = true;
      }`),
    ]);
    const snapshotter = summary.userUnits["nix-snapshotter"];
    expect(snapshotter?.Service).toMatchObject({ Type: "notify", Restart: "always" });
    expect(String(snapshotter?.Service?.ExecStart)).toMatch(
      /\/bin\/containerd-nsenter \/nix\/store\/[a-z0-9]{32}-nix-snapshotter-host\/bin\/nix-snapshotter --config /,
    );
    expect(snapshotter?.Install).toEqual({ WantedBy: ["default.target"] });
    // The user cannot write the store: Nix is reached through the nix-daemon (docs/rootless.md).
    expect(snapshotter?.Service?.Environment).toEqual([
      expect.stringMatching(
        /^PATH=\/nix\/store\/[a-z0-9]{32}-nix\/bin:\/nix\/store\/[a-z0-9]{32}-systemd\/bin$/,
      ),
      "NIX_REMOTE=daemon",
    ]);
    const containerd = summary.userUnits.containerd;
    expect(containerd?.Service).toMatchObject({ Type: "notify", NotifyAccess: "all" });
    expect(summary.containerdArgs.config).toMatch(/^\/nix\/store\/[a-z0-9]{32}-containerd\.toml$/);
    expect(summary.extraInit).toContain(
      'export CONTAINERD_ADDRESS="$XDG_RUNTIME_DIR/containerd/containerd.sock"',
    );
    // Rootless preload targets default to rootless containerd's socket.
    const targets = await evalJson<{ address: string; namespace: string }[]>(
      "modules.nix",
      "config.services.preload-containerd.rootless.targets",
      [
        "--argstr",
        "kind",
        "home",
        ...moduleArg(
          `{
            imports = [ ${nixString(join(repo, "nix/modules/home/preload-containerd-rootless.nix"))} ];
            services.preload-containerd.rootless = { enable = true; targets = [ { } ]; };
          }`,
        ),
      ],
    );
    expect(targets).toEqual([
      {
        archives: [],
        address: "$XDG_RUNTIME_DIR/containerd/containerd.sock",
        namespace: "default",
      },
    ]);
  });

  it("renders services.nix-registry: its TOML, unit, user and firewall", async () => {
    const module = `{
      services.nix-registry = {
        enable = true;
        openFirewall = true;
        settings = {
          pkgs_repo = "https://example.org/pkgs.git";
          port = 5000;
          host = "127.0.0.1";
          nix_timeout = 300;
          storage_path = "/srv/nix-registry";
          binary_cache = true;
          binary_cache_secret_key_file = "/etc/nix-registry/cache.sec";
          max_images = 64;
        };
      };
    }`;
    const summary = await evalJson<Summary>("modules.nix", "summary", moduleArg(module));
    const unit = summary.units["nix-registry"];
    expect(unit?.wantedBy).toEqual(["multi-user.target"]);
    expect(unit?.after).toEqual(["network.target", "nix-daemon.service"]);
    expect(unit?.serviceConfig).toMatchObject({
      Type: "exec",
      User: "nix-registry",
      Group: "nix-registry",
      Restart: "on-failure",
      CacheDirectory: "nix-registry",
      PrivateTmp: true,
    });
    expect(String(unit?.serviceConfig.ExecStart)).toMatch(
      /^\/nix\/store\/[a-z0-9]{32}-nix-registry-host\/bin\/nix-registry --config \/nix\/store\/[a-z0-9]{32}-nix-registry\.toml$/,
    );
    // Both writable directories, made for the service's user before each start (as root: "+").
    expect(
      ((unit?.serviceConfig.ExecStartPre ?? []) as string[]).map((line) =>
        line.replace(/^\+\/nix\/store\/[a-z0-9]{32}-coreutils/, "+coreutils"),
      ),
    ).toEqual([
      "+coreutils/bin/install -d -m 0750 -o nix-registry -g nix-registry /srv/nix-registry",
      "+coreutils/bin/install -d -m 0750 -o nix-registry -g nix-registry /nix/var/nix/gcroots/nix-registry",
    ]);
    const facts = await evalJson<{
      users: { users: Record<string, { isSystemUser: boolean; group: string }>; groups: object };
      ports: number[];
      environment: Record<string, string>;
    }>("modules.nix", "registryFacts", moduleArg(module));
    expect(facts.ports).toEqual([5000]);
    expect(facts.users.users["nix-registry"]).toMatchObject({
      isSystemUser: true,
      group: "nix-registry",
    });
    expect(Object.keys(facts.users.groups)).toEqual(["nix-registry"]);
    expect(facts.environment).toEqual({
      HOME: "%C/nix-registry",
      XDG_CACHE_HOME: "%C/nix-registry",
      NIX_REGISTRY_LOG_FORMAT: "json",
    });
    // The rendered file (the registry parses one in the systemd test below): null options are
    // absent; of the key only its path is written.
    const text = await evalJson<string>(
      "modules.nix",
      "config.services.nix-registry.configFile.text",
      moduleArg(module),
    );
    expect(text.trim().split("\n").sort()).toEqual([
      "binary_cache = true",
      'binary_cache_secret_key_file = "/etc/nix-registry/cache.sec"',
      'gc_roots_dir = "/nix/var/nix/gcroots/nix-registry"',
      'host = "127.0.0.1"',
      "max_images = 64",
      "nix_timeout = 300",
      'pkgs_repo = "https://example.org/pkgs.git"',
      "port = 5000",
      'storage_path = "/srv/nix-registry"',
    ]);

    // A user of one's own is not created; root runs it for a single-user Nix.
    const asRoot = await evalJson<{ users: { users: object; groups: object }; ports: number[] }>(
      "modules.nix",
      "registryFacts",
      moduleArg(
        `{ services.nix-registry = { enable = true; user = "root"; group = "root"; settings.pkgs_path = "/srv/pkgs"; }; }`,
      ),
    );
    expect([asRoot.users, asRoot.ports]).toEqual([{ users: {}, groups: {} }, []]);
  });

  it("rejects hostile or mistaken configurations with an error naming the option", async () => {
    const evalError = (module: string, kind = "nixos") =>
      execFailure("nix-instantiate", [
        "--eval",
        "--strict",
        "--json",
        join(testsDir, "modules.nix"),
        "-A",
        "summary",
        ...baseArgs(),
        "--argstr",
        "kind",
        kind,
        ...moduleArg(module),
      ]);
    expect(
      await evalError(
        `{ services.nix-snapshotter = { enable = true; settings.mount_mode = "symlink"; }; }`,
      ),
    ).toMatch(/services\.nix-snapshotter\.settings\.mount_mode.*not of type/s);
    expect(await evalError(`{ services.nix-snapshotter.enabel = true; }`)).toMatch(
      /services\.nix-snapshotter\.enabel' does not exist/,
    );
    expect(
      await evalError(`{ services.nix-snapshotter = { enable = true; settings.address = 42; }; }`),
    ).toMatch(/settings\.address.*not of type/s);
    expect(
      await evalError(
        `{ services.nix-snapshotter.rootless = { enable = true; settings.image_service.enable = "yes"; }; }`,
        "home",
      ),
    ).toMatch(/image_service\.enable.*not of type/s);
    expect(
      await evalError(
        `{ imports = [ { virtualisation.containerd.defaultRuntime = "runc"; } ]; virtualisation.containerd = { enable = true; defaultRuntime = "crun"; }; }`,
      ),
    ).toMatch(/defaultRuntime' has conflicting definition values/);
    // services.nix-registry: the assertions name what is wrong, as nixpkgs reports them.
    expect(
      await evalError(
        `{ services.nix-registry = { enable = true; settings = { pkgs_path = "/srv/a"; pkgs_repo = "/srv/b"; }; }; }`,
      ),
    ).toMatch(/set exactly one of settings\.pkgs_path and settings\.pkgs_repo/);
    expect(await evalError(`{ services.nix-registry.enable = true; }`)).toMatch(
      /set exactly one of settings\.pkgs_path and settings\.pkgs_repo/,
    );
    expect(
      await evalError(
        `{ services.nix-registry = { enable = true; settings = { pkgs_path = "/srv/a"; binary_cache = true; }; }; }`,
      ),
    ).toMatch(/binary_cache needs settings\.binary_cache_secret_key_file/);
    expect(
      await evalError(
        `{ services.nix-registry = { enable = true; settings = { pkgs_path = "/srv/a"; binary_cache = true; binary_cache_secret_key_file = "/nix/store/x-key"; }; }; }`,
      ),
    ).toMatch(/must be an absolute path outside the Nix store/);
    expect(
      await evalError(
        `{ services.nix-registry = { enable = true; settings = { pkgs_path = "/srv/a"; gc_roots_dir = "/var/lib/roots"; }; }; }`,
      ),
    ).toMatch(/gc_roots_dir must be below \/nix\/var\/nix\/gcroots\//);
    expect(
      await evalError(
        `{ services.nix-registry = { enable = true; settings = { pkgs_path = "/srv/a"; nix_timeout = 0; }; }; }`,
      ),
    ).toMatch(/settings\.nix_timeout.*not of type/s);
  });
});

describe.skipIf(!hasNix || !isRoot)("nix interface: buildImage (needs root and Nix)", () => {
  const runId = `nix-interface-${process.pid}-${randomBytes(4).toString("hex")}`;
  const gcRoots = join(gcRootsBase, runId);
  const salt = randomBytes(8).toString("hex");

  beforeAll(async () => {
    await mkdir(gcRoots, { recursive: true });
  });
  afterAll(async () => {
    await rm(gcRoots, { recursive: true, force: true });
  });

  /** nix-build with an out-link under our GC roots; returns the store path. */
  async function build(file: string, attribute: string, extra: string[] = []): Promise<string> {
    const link = join(gcRoots, attribute.replaceAll(/[^A-Za-z0-9._-]/g, "_"));
    const stdout = await exec("nix-build", [
      join(testsDir, file),
      "-A",
      attribute,
      "-o",
      link,
      ...offline,
      ...baseArgs(),
      ...extra,
    ]);
    return stdout.trim().split("\n").at(-1) ?? "";
  }

  /** A package set of one package built from the host's /bin/sh (no nixpkgs here). */
  async function registryPackageSet(): Promise<string> {
    const directory = join(gcRoots, "registry-package-set");
    await mkdir(directory, { recursive: true });
    await writeFile(
      join(directory, "default.nix"),
      `{ system ? builtins.currentSystem }: {
        greeting = derivation {
          name = "greeting";
          inherit system;
          builder = "/bin/sh";
          PATH = "/usr/bin:/bin";
          args = [ "-c" "mkdir -p $out/bin; printf '#!/bin/sh\\necho hello from ${salt}\\n' > $out/bin/greeting" ];
        };
      }\n`,
    );
    return directory;
  }

  /** Polls /v2/ until it answers (at most 60 s), failing early if the process exits. */
  async function waitForRegistry(
    port: number,
    child: ChildProcess | undefined,
    log: () => string,
  ): Promise<void> {
    for (let attempt = 0; attempt < 240; attempt++) {
      if (child !== undefined && child.exitCode !== null) {
        throw new Error(`nix-registry exited with ${child.exitCode}: ${log()}`);
      }
      const response = await fetch(`http://127.0.0.1:${port}/v2/`).catch(() => undefined);
      if (response !== undefined) {
        await response.arrayBuffer();
        return;
      }
      await new Promise((done) => setTimeout(done, 250));
    }
    throw new Error(`nix-registry did not answer on port ${port}: ${log()}`);
  }

  /** The base route, an unknown package (Nix evaluates) and a built image (Nix builds). */
  async function expectRegistryServes(port: number): Promise<void> {
    const base = await fetch(`http://127.0.0.1:${port}/v2/`);
    expect(base.status).toBe(200);
    expect(base.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    const unknown = await fetch(`http://127.0.0.1:${port}/v2/no-such-package/manifests/latest`);
    expect(unknown.status).toBe(404);
    expect(JSON.stringify(await unknown.json())).toContain("no-such-package");
    const manifest = await fetch(`http://127.0.0.1:${port}/v2/greeting/manifests/latest`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    const body = await manifest.text();
    expect(manifest.status, body).toBe(200);
    const parsed = JSON.parse(body) as { layers: { annotations?: Record<string, string> }[] };
    const annotations = Object.values(parsed.layers[0]?.annotations ?? {});
    expect(annotations.some((value) => /^\/nix\/store\/[a-z0-9]{32}-greeting$/.test(value))).toBe(
      true,
    );
  }

  it("gives k3s on this containerd the CRI settings of k3s' own containerd (docs/k3s.md)", async (context) => {
    const extra = moduleArg(`{
      virtualisation.containerd = { enable = true; nixSnapshotterIntegration = true; k3sIntegration = true; };
      services.k3s.enable = true;
    }`);
    const config = await build("modules.nix", "containerdConfig", extra);
    const toml = await readFile(config, "utf8");
    for (const line of [
      'stream_server_address = "127.0.0.1"',
      'stream_server_port = "10010"',
      "enable_selinux = false",
      "enable_unprivileged_ports = true",
      "enable_unprivileged_icmp = true",
      'sandbox_image = "rancher/mirrored-pause:3.6"',
      'conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d/"',
      'sandbox = "rancher/mirrored-pause:3.6"',
    ]) {
      expect(toml).toContain(line);
    }
    // Rootless-only keys of k3s' template stay out of a rootful node's config.
    for (const key of ["disable_cgroup", "disable_apparmor", "restrict_oom_score_adj"]) {
      expect(toml).not.toContain(key);
    }
    // The CNI plugin directory holds the standard plugins and flannel.
    const binDir = /bin_dir = "([^"]+)"/.exec(toml)?.[1];
    expect(binDir).toMatch(/^\/nix\/store\/[a-z0-9]{32}-k3s-cni-plugins\/bin$/);
    expect(await readdir(binDir!)).toEqual(
      expect.arrayContaining(["bridge", "loopback", "flannel"]),
    );
    expect(toml).toContain(`bin_dirs = ["${binDir}"]`);

    // containerd 2.1 reads every setting from the rendered file.
    const fetched = spawnSync("bash", [join(repo, "scripts/fetch-containerd.sh"), "sid"], {
      encoding: "utf8",
    });
    const bin = fetched.stdout.trim();
    if (fetched.status !== 0 || !existsSync(join(bin, "containerd"))) {
      context.skip(`containerd 2.1 unavailable: ${fetched.stderr.trim()}`);
      return;
    }
    const dump = await exec(join(bin, "containerd"), ["--config", config, "config", "dump"]);
    for (const line of [
      "stream_server_address = '127.0.0.1'",
      "stream_server_port = '10010'",
      "enable_unprivileged_ports = true",
      "enable_unprivileged_icmp = true",
      "sandbox = 'rancher/mirrored-pause:3.6'",
      "conf_dir = '/var/lib/rancher/k3s/agent/etc/cni/net.d/'",
      `bin_dirs = ['${binDir}']`,
    ]) {
      expect(dump).toContain(line);
    }
  });

  // What nix/tests/package-build.nix needs besides the stage: the pnpm package running the
  // tests and its store (the seed of the stand-in fetcher, since no registry is reachable).
  const packageBuildInputs = ((): { pnpmPackage: string; seedStore: string } | undefined => {
    const which = spawnSync("sh", ["-c", "command -v pnpm"], { encoding: "utf8" });
    const store = spawnSync("pnpm", ["store", "path"], { cwd: repo, encoding: "utf8" });
    if (which.status !== 0 || store.status !== 0 || !existsSync("/usr/bin/jq")) return undefined;
    // node_modules/.bin/pnpm -> ../pnpm/bin/pnpm.cjs
    const pnpmPackage = dirname(dirname(realpathSync(which.stdout.trim())));
    const storePath = store.stdout.trim();
    return existsSync(join(pnpmPackage, "bin/pnpm.cjs")) && existsSync(storePath)
      ? { pnpmPackage, seedStore: dirname(storePath) }
      : undefined;
  })();

  it.skipIf(packageBuildInputs === undefined)(
    "builds nix/package.nix for real: pnpm store fetch, offline install, tsup builds, production install, wrappers (skips without pnpm, its store or jq)",
    async () => {
      const inputs = packageBuildInputs as { pnpmPackage: string; seedStore: string };
      const extra = [
        "--argstr",
        "pnpmPackage",
        inputs.pnpmPackage,
        "--argstr",
        "seedStore",
        inputs.seedStore,
      ];
      const out = await build("package-build.nix", "package", extra);
      expect(out).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nix-snapshotter-\d+\.\d+\.\d+$/);
      // The wrappers run the apps from the package's own copy of the workspace.
      const cliHelp = await exec(join(out, "bin/nix2container"), ["--help"]);
      expect(cliHelp).toMatch(/^Usage: nix2container /);
      const daemonHelp = await exec(join(out, "bin/nix-snapshotter"), ["--help"]);
      expect(daemonHelp).toMatch(/^Usage: nix-snapshotter /);
      const wrapper = await readFile(join(out, "bin/nix-snapshotter"), "utf8");
      expect(wrapper).toContain(`${out}/lib/nix-snapshotter/apps/nix-snapshotter/dist/main.js`);
      // The registry: its wrapper, the sibling package holding only it, its fixed expressions.
      const registryHelp = await exec(join(out, "bin/nix-registry"), ["--help"]);
      expect(registryHelp).toMatch(/^Usage: nix-registry /);
      const registryWrapper = await readFile(join(out, "bin/nix-registry"), "utf8");
      expect(registryWrapper).toContain(
        `${out}/lib/nix-snapshotter/apps/nix-registry/dist/main.js`,
      );
      // Nix, git and setpriv on the PATH it appends (the stand-in's links to the host's).
      const pathBins = registryWrapper
        .split("\n")
        .filter((line) => line.includes("PATH"))
        .flatMap((line) => [...line.matchAll(/\/nix\/store\/[a-z0-9]{32}-[^/:'"]+\/bin/g)])
        .map((match) => match[0]);
      for (const program of ["nix-build", "nix-instantiate", "nix-store", "git", "setpriv"]) {
        expect(
          pathBins.some((bin) => existsSync(join(bin, program))),
          program,
        ).toBe(true);
      }
      expect(
        existsSync(join(out, "lib/nix-snapshotter/apps/nix-registry/nix/image-inputs.nix")),
      ).toBe(true);
      expect(existsSync(join(out, "lib/nix-snapshotter/apps/nix-registry/src"))).toBe(false);
      const registry = await build("package-build.nix", "registry", extra);
      expect(registry).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nix-registry-\d+\.\d+\.\d+$/);
      expect(realpathSync(join(registry, "bin/nix-registry"))).toBe(
        realpathSync(join(out, "bin/nix-registry")),
      );
      // It starts from the package alone and answers the distribution API's base route.
      // It starts from the package alone (Nix from its wrapper's PATH only), answers the
      // distribution API and builds an image of a package set with Nix.
      const packageSet = await registryPackageSet();
      const storage = await mkdtemp(join(tmpdir(), "nix-registry-package-"));
      const port = await freePort();
      const registryProcess = spawn(join(registry, "bin/nix-registry"), [], {
        env: {
          PATH: "/nonexistent",
          // Offline (no binary cache reachable), and the set builds with the host's /bin/sh.
          NIX_CONFIG: "sandbox = false\nsubstituters =",
          HOST: "127.0.0.1",
          PORT: String(port),
          PKGS_PATH: packageSet,
          STORAGE_PATH: storage,
          NIX_REGISTRY_GC_ROOTS_DIR: join(gcRoots, "registry-package"),
          NIX_REGISTRY_LOG_FORMAT: "json",
        },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let log = "";
      registryProcess.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
        if (log.length < 1_000_000) log += chunk;
      });
      try {
        await waitForRegistry(port, registryProcess, () => log);
        await expectRegistryServes(port);
      } finally {
        registryProcess.kill("SIGTERM");
        await new Promise((done) => registryProcess.once("close", done));
        await rm(storage, { recursive: true, force: true });
      }
      // The production install: the apps' dependencies, not the build tools. (vitest is there:
      // @nix-snapshotter/snapshotter declares it as a peer dependency for its testing export,
      // and pnpm installs peers; an open item, not checked here.)
      const installed = await readdir(join(out, "lib/nix-snapshotter/node_modules/.pnpm"));
      expect(installed.some((name) => name.startsWith("pino@"))).toBe(true);
      expect(installed.filter((name) => /^(tsup|typescript|turbo|@biomejs\+)/.test(name))).toEqual(
        [],
      );
      expect(existsSync(join(out, "lib/nix-snapshotter/apps/nix-snapshotter/src"))).toBe(false);

      // The fetcher's output, as nixpkgs' leaves it.
      const deps = await build("package-build.nix", "pnpmDeps", extra);
      expect(await readFile(join(deps, ".fetcher-version"), "utf8")).toBe("2\n");
      expect((await readdir(join(deps, "v10"))).sort()).toEqual(["files", "index"]);
      const indexDir = join(deps, "v10/index");
      const shard = (await readdir(indexDir))[0] as string;
      const entry = (await readdir(join(indexDir, shard)))[0] as string;
      const index = await readFile(join(indexDir, shard, entry), "utf8");
      expect(index).not.toContain("checkedAt");
      expect(index).toBe(`${JSON.stringify(sortKeys(JSON.parse(index)), null, 2)}\n`);
    },
    1_200_000,
  );

  // A real systemd (252 here) as PID 1 of its own PID and mount namespace, in a root made by
  // nix/tests/systemd-root.sh (the machine's /usr read-only, its /nix, nothing else written back):
  // the unit our NixOS module renders is started with systemctl and serves an image it builds.
  const canBootSystemd =
    isRoot &&
    existsSync("/usr/lib/systemd/systemd") &&
    existsSync("/usr/bin/nsenter") &&
    existsSync("/usr/bin/systemd-analyze") &&
    existsSync("/sys/fs/cgroup/systemd");
  it.skipIf(packageBuildInputs === undefined || !canBootSystemd)(
    "runs services.nix-registry's unit under a real systemd: systemctl start, /v2/, an image, the signed binary cache, systemctl stop (skips without systemd 252's hybrid cgroups, pnpm's store or jq)",
    async () => {
      const inputs = packageBuildInputs as { pnpmPackage: string; seedStore: string };
      const registry = await build("package-build.nix", "registry", [
        "--argstr",
        "pnpmPackage",
        inputs.pnpmPackage,
        "--argstr",
        "seedStore",
        inputs.seedStore,
      ]);
      const work = await mkdtemp(join("/var/tmp", "nix-registry-systemd-"));
      onTestFinished(() => rm(work, { recursive: true, force: true }));
      // Outside /tmp and /var/tmp, which the unit's PrivateTmp= replaces.
      const keys = await mkdtemp(join("/var/lib", "nix-registry-test-keys-"));
      onTestFinished(() => rm(keys, { recursive: true, force: true }));
      await exec("nix-store", [
        "--generate-binary-cache-key",
        "nix-registry-test-1",
        join(keys, "cache.sec"),
        join(keys, "cache.pub"),
      ]);
      const publicKey = (await readFile(join(keys, "cache.pub"), "utf8")).trim();
      const packageSet = await registryPackageSet();
      const port = await freePort();
      const module = `{
        services.nix-registry = {
          enable = true;
          # Debian's Nix here is single-user (no daemon): the store's owner builds.
          user = "root";
          group = "root";
          settings = {
            host = "127.0.0.1";
            port = ${port};
            pkgs_path = ${nixString(packageSet)};
            gc_roots_dir = ${nixString(join(gcRoots, "systemd"))};
            nix_timeout = 300;
            binary_cache = true;
            binary_cache_secret_key_file = ${nixString(join(keys, "cache.sec"))};
          };
        };
        # The test's package set builds with the host's /bin/sh.
        systemd.services.nix-registry.environment.NIX_CONFIG = "sandbox = false";
      }`;
      const rendered = await build("modules.nix", "registryUnitFile", [
        ...moduleArg(module),
        "--argstr",
        "registryPackage",
        registry,
      ]);
      const units = join(work, "units");
      await mkdir(join(units, "nix-registry.service.d"), { recursive: true });
      const unitFile = join(units, "nix-registry.service");
      await writeFile(unitFile, await readFile(rendered, "utf8"));
      // The one addition to the rendered unit: the test's Node (the package's, outside the store
      // here) lives under /tmp, which PrivateTmp= replaces; systemd binds this after it.
      const nodeDirectories = [
        ...new Set([dirname(staged.node), dirname(realpathSync(staged.node))]),
      ];
      await writeFile(
        join(units, "nix-registry.service.d", "test-node.conf"),
        `[Service]\n${nodeDirectories.map((directory) => `BindReadOnlyPaths=${directory}\n`).join("")}`,
      );
      expect(await readFile(unitFile, "utf8")).toContain(`${registry}/bin/nix-registry --config`);

      // systemd's own check of the file (unknown keys, bad values, missing executables).
      const verify = spawnSync("systemd-analyze", ["verify", "--man=no", unitFile], {
        encoding: "utf8",
      });
      expect(verify.status, verify.stderr).toBe(0);
      expect(
        verify.stderr.split("\n").filter((line) => /nix-registry\.service/.test(line)),
      ).toEqual([]);

      const systemd = spawn(
        "bash",
        [join(testsDir, "systemd-root.sh"), work, units, keys, ...nodeDirectories],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      let systemdLog = "";
      systemd.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
        if (systemdLog.length < 100_000) systemdLog += chunk;
      });
      const exited = new Promise((done) => systemd.once("close", done));
      let pid = "";
      const inside = async (program: string, args: string[]): Promise<string> =>
        exec("nsenter", ["-t", pid, "-m", "-p", "-r", "-w", program, ...args]);
      try {
        for (let attempt = 0; attempt < 240 && pid === ""; attempt++) {
          pid = (await readFile(join(work, "pid"), "utf8").catch(() => "")).trim();
          if (systemd.exitCode !== null) throw new Error(`systemd-root.sh exited: ${systemdLog}`);
          if (pid === "") await new Promise((done) => setTimeout(done, 250));
        }
        expect(pid).toMatch(/^\d+$/);
        let state = "";
        for (let attempt = 0; attempt < 240; attempt++) {
          const run = spawnSync(
            "nsenter",
            ["-t", pid, "-m", "-p", "-r", "-w", "systemctl", "is-system-running"],
            { encoding: "utf8" },
          );
          state = run.stdout.trim();
          if (state === "running" || state === "degraded") break;
          await new Promise((done) => setTimeout(done, 250));
        }
        expect(state).toBe("running");

        await inside("systemctl", ["start", "nix-registry.service"]);
        const journal = () =>
          spawnSync(
            "nsenter",
            [
              "-t",
              pid,
              "-m",
              "-p",
              "-r",
              "-w",
              "systemctl",
              "status",
              "--no-pager",
              "-n",
              "50",
              "nix-registry.service",
            ],
            { encoding: "utf8" },
          ).stdout;
        await waitForRegistry(port, undefined, journal);
        await expectRegistryServes(port);

        // The closure was exported to the binary cache, signed with the configured key.
        const info = await fetch(`http://127.0.0.1:${port}/nix-cache-info`);
        expect(await info.text()).toContain("StoreDir: /nix/store");
        // The registry's GC roots (on the machine's /nix) hold the package it built.
        const rootsDirectory = join(gcRoots, "systemd");
        const links = await Promise.all(
          (await readdir(rootsDirectory, { recursive: true })).map((entry) =>
            readlink(join(rootsDirectory, entry)).catch(() => ""),
          ),
        );
        const storePath = links.find((target) =>
          /^\/nix\/store\/[a-z0-9]{32}-greeting$/.test(target),
        );
        expect(storePath, journal()).toBeDefined();
        const properties = Object.fromEntries(
          (
            await inside("systemctl", [
              "show",
              "nix-registry.service",
              "-p",
              "ActiveState,SubState,User,Type",
            ])
          )
            .trim()
            .split("\n")
            .map((line) => line.split("=", 2) as [string, string]),
        );
        expect(properties).toMatchObject({
          ActiveState: "active",
          SubState: "running",
          User: "root",
          Type: "exec",
        });
        const hash = (storePath as string).slice("/nix/store/".length, "/nix/store/".length + 32);
        const narinfo = await fetch(`http://127.0.0.1:${port}/${hash}.narinfo`);
        const narinfoText = await narinfo.text();
        expect(narinfo.status, narinfoText).toBe(200);
        expect(narinfoText).toContain(`StorePath: ${storePath}`);
        expect(narinfoText).toContain(`Sig: ${publicKey.split(":")[0]}:`);

        // A clean stop: SIGTERM, exit 0, nothing left running.
        await inside("systemctl", ["stop", "nix-registry.service"]);
        const stopped = await inside("systemctl", [
          "show",
          "nix-registry.service",
          "-p",
          "ActiveState,Result,ExecMainStatus",
        ]);
        expect(stopped.trim().split("\n").sort()).toEqual([
          "ActiveState=inactive",
          "ExecMainStatus=0",
          "Result=success",
        ]);
        expect(await fetch(`http://127.0.0.1:${port}/v2/`).catch(() => "refused")).toBe("refused");
      } finally {
        if (pid !== "") spawnSync("kill", ["-KILL", pid]);
        else systemd.kill("SIGKILL");
        await exited;
      }
    },
    900_000,
  );

  it("builds the rootless programs (bash, checked with shellcheck like nixpkgs' writeShellApplication)", async () => {
    const scripts = await build("modules.nix", "rootlessScripts", [
      "--argstr",
      "kind",
      "home",
      ...moduleArg(`{
        virtualisation.containerd.rootless = { enable = true; nixSnapshotterIntegration = true; };
        services.nix-snapshotter.rootless.enable = true;
      }`),
    ]);
    const launcher = await readFile(join(scripts, "containerd-rootless"), "utf8");
    expect(launcher).toContain('--state-dir="$XDG_RUNTIME_DIR/containerd-rootless"');
    const child =
      /\/nix\/store\/\S+-containerd-rootless-child\/bin\/containerd-rootless-child/.exec(
        launcher,
      )?.[0];
    expect(child).toBeDefined();
    const childText = await readFile(child ?? "", "utf8");
    const mountPoints = [...childText.matchAll(/^mount --bind "[^"]+" "([^"]+)"$/gm)].map(
      (match) => match[1],
    );
    expect(mountPoints).toEqual([
      "/etc/cni",
      "/run/containerd",
      "/run/nix-snapshotter",
      "/var/lib/cni",
      "/var/lib/containerd",
      "/var/lib/containerd/io.containerd.snapshotter.v1.nix",
    ]);
    expect(childText).toMatch(/^exec containerd --config '\/nix\/store\/\S+-containerd\.toml'$/m);
    const nsenter = await readFile(join(scripts, "containerd-nsenter"), "utf8");
    expect(nsenter).toContain('--target "$pid" -- "$@"');
  });

  it("computes the Go project's passthru: name, tag, image reference, architecture", async () => {
    const passthru = await evalJson<Record<string, Record<string, string>>>(
      "images.nix",
      "passthru",
      ["--argstr", "salt", salt],
    );
    expect(passthru.hello).toMatchObject({
      name: "Example.org/Hello",
      tag: "latest",
      image: "example.org/hello:latest",
      architecture: "amd64",
    });
    expect(passthru.hello?.path).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nix-image-Hello\.tar$/);
    expect(passthru.nix?.image).toBe(`nix:0${passthru.nix?.path}`);
    // Lower-cased: the store path is the image reference.
    expect(passthru.nix?.path).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nix-image-hello-nix\.tar$/);
    expect(passthru.nix?.architecture).toBe("arm64");
    expect(passthru.layered).toMatchObject({ image: "hello-shell:v1", tag: "v1" });
  });

  it("writes copyToRegistry and copyToContainerd scripts with the Go project's flags", async () => {
    // The scripts' text, without building the image they refer to.
    const registryText = await evalJson<string>("images.nix", "copy-to-registry.text", [
      "--argstr",
      "salt",
      salt,
    ]);
    expect(registryText).toMatch(
      /nix2container push \\\n\s+--ref 'localhost:5000\/hello:v2' \\\n\s+--plain-http \\\n\s+\/nix\/store\/[a-z0-9]{32}-nix-image-Hello\.tar/,
    );
    const containerdText = await evalJson<string>("images.nix", "copy-to-containerd.text", [
      "--argstr",
      "salt",
      salt,
    ]);
    expect(containerdText).toContain('--address "$XDG_RUNTIME_DIR/containerd/containerd.sock"');
    expect(containerdText).not.toContain("--namespace");
    expect(containerdText).toMatch(/ load \/nix\/store\/[a-z0-9]{32}-nix-image-Hello\.tar/);
  });

  // The CLI is written by another engineer; until its `build` command exists this part skips.
  const cliBuilds = cliHasCommand("build");

  it.skipIf(!cliBuilds || !hasSkopeo)(
    "builds nix images with nix-build and the workspace's nix2container (skips without apps/nix2container/dist or skopeo)",
    async () => {
      const image = await build("images.nix", "hello-image", ["--argstr", "salt", salt]);
      expect(image).toMatch(/^\/nix\/store\/[a-z0-9]{32}-nix-image-Hello\.tar$/);
      expect((await stat(image)).isFile()).toBe(true);

      const inspect = JSON.parse(
        await exec("skopeo", ["inspect", "--config", `oci-archive:${image}`]),
      ) as { architecture: string; os: string; config: { Entrypoint: string[]; Env: string[] } };
      expect(inspect.architecture).toBe("amd64");
      expect(inspect.os).toBe("linux");
      const closure = (await exec("nix-store", ["-qR", join(gcRoots, "hello-image")]))
        .trim()
        .split("\n");
      const busybox = closure.find((path) => path.endsWith("-busybox-fixture"));
      const hello = closure.find((path) => path.endsWith("-hello"));
      expect(busybox).toBeDefined();
      expect(inspect.config.Entrypoint).toEqual([`${busybox}/bin/sh`, `${hello}/bin/hello`]);
      expect(inspect.config.Env).toContain(`SALT=${salt}`);

      const manifest = JSON.parse(
        await exec("skopeo", ["inspect", "--raw", `oci-archive:${image}`]),
      ) as { layers: { annotations?: Record<string, string> }[] };
      const annotations = manifest.layers.at(-1)?.annotations ?? {};
      // The default annotation form: the closure form alone, naming the closure-info path whose
      // store-paths file lists the closure (no nix-layer, no per-path labels).
      expect(Object.keys(annotations)).toEqual(["containerd.io/snapshot/nix-closure"]);
      const closureInfo = annotations["containerd.io/snapshot/nix-closure"]!;
      expect(closureInfo).toMatch(/^\/nix\/store\/[a-z0-9]{32}-closure-info$/);
      const listed = (await readFile(join(closureInfo, "store-paths"), "utf8")).split("\n");
      expect(listed).toEqual(expect.arrayContaining([busybox, hello]));

      const nixImage = await build("images.nix", "nix-image", ["--argstr", "salt", salt]);
      const nixConfig = JSON.parse(
        await exec("skopeo", ["inspect", "--config", `oci-archive:${nixImage}`]),
      ) as { architecture: string };
      expect(nixConfig.architecture).toBe("arm64");

      const layered = await build("images.nix", "layered-image", ["--argstr", "salt", salt]);
      const layeredManifest = JSON.parse(
        await exec("skopeo", ["inspect", "--raw", `oci-archive:${layered}`]),
      ) as { layers: unknown[] };
      expect(layeredManifest.layers.length).toBe(manifest.layers.length + 1);
    },
  );

  it.skipIf(!cliBuilds || !hasSkopeo)(
    "builds the flake's example images (hello, redis, redisWithShell) and the redis Pod and Service",
    async () => {
      const configOf = async (attribute: string) => {
        const archive = await build("examples.nix", attribute);
        return JSON.parse(
          await exec("skopeo", ["inspect", "--config", `oci-archive:${archive}`]),
        ) as {
          config: { Entrypoint: string[] };
        };
      };
      expect((await configOf("images.hello")).config.Entrypoint).toEqual([
        expect.stringMatching(/^\/nix\/store\/[a-z0-9]{32}-hello\/bin\/hello$/),
      ]);
      const redis = await configOf("images.redis");
      expect(redis.config.Entrypoint).toEqual([
        expect.stringMatching(/^\/nix\/store\/[a-z0-9]{32}-redis\/bin\/redis-server$/),
      ]);
      expect((await configOf("images.redisWithShell")).config.Entrypoint).toEqual(["/bin/sh"]);
      // Built on the redis image: its layers come first.
      const layersOf = async (attribute: string) =>
        (
          JSON.parse(
            await exec("skopeo", [
              "inspect",
              "--raw",
              `oci-archive:${join(gcRoots, attribute.replaceAll(/[^A-Za-z0-9._-]/g, "_"))}`,
            ]),
          ) as { layers: Array<{ digest: string }> }
        ).layers.map((layer) => layer.digest);
      const redisLayers = await layersOf("images.redis");
      const shellLayers = await layersOf("images.redisWithShell");
      expect(shellLayers.slice(0, redisLayers.length)).toEqual(redisLayers);
      expect(shellLayers.length).toBeGreaterThan(redisLayers.length);

      const resources = await build("examples.nix", "k8sResourcesDir");
      expect((await readdir(resources)).sort()).toEqual(["redis-pod.json", "redis-service.json"]);
      const pod = JSON.parse(await readFile(join(resources, "redis-pod.json"), "utf8")) as {
        kind: string;
        spec: { containers: Array<{ image: string }> };
      };
      expect(pod.kind).toBe("Pod");
      expect(pod.spec.containers[0]?.image).toMatch(
        /^nix:0\/nix\/store\/[a-z0-9]{32}-nix-image-redis\.tar$/,
      );
      const service = JSON.parse(await readFile(join(resources, "redis-service.json"), "utf8")) as {
        spec: { selector: Record<string, string> };
      };
      expect(service.spec.selector).toEqual({ name: "redis" });
    },
  );

  it.skipIf(!cliBuilds || !cliHasCommand("push") || !hasProgram("/usr/bin/docker-registry"))(
    "copyToRegistry pushes the image to a local registry (skips until `nix2container push` exists)",
    async () => {
      const port = await freePort();
      const registryDir = await mkdtemp(join(tmpdir(), "nix-interface-registry-"));
      const config = join(registryDir, "config.yml");
      await writeFile(
        config,
        `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${registryDir}/data\nhttp:\n  addr: 127.0.0.1:${port}\n`,
      );
      const registry = spawn("/usr/bin/docker-registry", ["serve", config], { stdio: "ignore" });
      try {
        const host = `127.0.0.1:${port}`;
        for (let attempt = 0; attempt < 100; attempt++) {
          const ok = await fetch(`http://${host}/v2/`).then(
            (response) => response.ok,
            () => false,
          );
          if (ok) break;
          await new Promise((done) => setTimeout(done, 50));
        }
        const script = await build("images.nix", "copy-to-registry", [
          "--argstr",
          "salt",
          salt,
          "--argstr",
          "registry",
          host,
        ]);
        await exec(join(script, "bin/copy-to-registry"), []);
        const pushed = JSON.parse(
          await exec("skopeo", [
            "inspect",
            "--tls-verify=false",
            "--raw",
            `docker://${host}/hello:v2`,
          ]),
        ) as { layers: { annotations?: Record<string, string> }[] };
        // The nix layer's annotation (the closure form, buildImage's default) survived the push.
        expect(pushed.layers.at(-1)?.annotations?.["containerd.io/snapshot/nix-closure"]).toMatch(
          /^\/nix\/store\/[a-z0-9]{32}-closure-info$/,
        );
      } finally {
        registry.kill("SIGTERM");
        await new Promise((done) => registry.once("exit", done));
        await rm(registryDir, { recursive: true, force: true });
      }
    },
  );

  it("refuses a config that is not an attribute set and names that cannot be nix:0 references", async () => {
    const stderr = await execFailure("nix-instantiate", [
      "--eval",
      "--strict",
      "-E",
      `(import ${nixString(join(testsDir, "stand-in/pkgs.nix"))} { node = "x"; repo = "y"; }).buildImage { name = "bad"; config = "not a set"; }`,
    ]);
    expect(stderr).toMatch(/config must be an attribute set/);
    for (const name of ["a+b", "trailing-", "..", "white space"]) {
      const refused = await execFailure("nix-instantiate", [
        "--eval",
        "--strict",
        "-E",
        `(import ${nixString(join(testsDir, "stand-in/pkgs.nix"))} { node = "x"; repo = "y"; }).buildImage { name = ${nixString(name)}; resolvedByNix = true; }`,
      ]);
      expect(refused, name).toMatch(/with resolvedByNix, the last part of name/);
    }
  });
});

describe.skipIf(!hasNix || !isRoot || !hasContainerd)(
  "nix interface: rendered configs accepted by the system's containerd (1.6 on Debian 12, 1.7 on Debian 13) and the daemon (needs root, Nix, containerd)",
  () => {
    const runId = `nix-interface-configs-${process.pid}-${randomBytes(4).toString("hex")}`;
    const gcRoots = join(gcRootsBase, runId);
    let dir = "";
    const children: ChildProcess[] = [];

    beforeAll(async () => {
      await mkdir(gcRoots, { recursive: true });
      dir = await mkdtemp(join(tmpdir(), "nix-interface-"));
    });
    afterAll(async () => {
      for (const child of children) {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          await new Promise((done) => child.once("exit", done));
        }
      }
      // containerd's state may hold mounts; unmount what lies under our directory.
      const mounts = await readFile("/proc/self/mounts", "utf8");
      for (const line of mounts.split("\n").reverse()) {
        const target = line.split(" ")[1];
        if (target?.startsWith(dir)) await run("umount", ["-l", target]).catch(() => undefined);
      }
      await rm(dir, { recursive: true, force: true });
      await rm(gcRoots, { recursive: true, force: true });
    });

    async function waitForSocket(path: string, child: ChildProcess, log: () => string) {
      for (let attempt = 0; attempt < 600; attempt++) {
        if (existsSync(path)) return;
        if (child.exitCode !== null) {
          throw new Error(`process exited with ${child.exitCode} before ${path}:\n${log()}`);
        }
        await new Promise((done) => setTimeout(done, 50));
      }
      throw new Error(`no socket at ${path}:\n${log()}`);
    }

    function start(command: string, args: string[], env: NodeJS.ProcessEnv) {
      const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      let output = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.stderr?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      return { child, log: () => output };
    }

    it("starts containerd with the module's config and the daemon with the unit's command line", async () => {
      const containerdSocket = join(dir, "containerd.sock");
      const snapshotterSocket = join(dir, "nix-snapshotter", "nix-snapshotter.sock");
      const module = `{
        virtualisation.containerd = {
          enable = true;
          nixSnapshotterIntegration = true;
          settings = {
            root = ${nixString(join(dir, "containerd-root"))};
            state = ${nixString(join(dir, "containerd-state"))};
            grpc.address = ${nixString(containerdSocket)};
          };
        };
        services.nix-snapshotter = {
          enable = true;
          logLevel = "debug";
          settings = {
            address = ${nixString(snapshotterSocket)};
            root = ${nixString(join(dir, "snapshotter-root"))};
            mount_mode = "hardlink";
            gc_roots_dir = ${nixString(join(gcRoots, "snapshotter"))};
            image_service.containerd_address = ${nixString(containerdSocket)};
          };
        };
      }`;
      const extra = moduleArg(module);
      const link = (name: string) => join(gcRoots, name);
      await exec("nix-build", [
        join(testsDir, "modules.nix"),
        "-A",
        "containerdConfig",
        "-o",
        link("containerd.toml"),
        ...offline,
        ...baseArgs(),
        ...extra,
      ]);
      await exec("nix-build", [
        join(testsDir, "modules.nix"),
        "-A",
        "snapshotterConfig",
        "-o",
        link("nix-snapshotter.toml"),
        ...offline,
        ...baseArgs(),
        ...extra,
      ]);
      const summary = await evalJson<Summary>("modules.nix", "summary", extra);

      const containerdToml = await readFile(link("containerd.toml"), "utf8");
      expect(containerdToml).toContain("[proxy_plugins.nix]");
      expect(containerdToml).toContain(`address = ${JSON.stringify(snapshotterSocket)}`);
      expect(containerdToml).toMatch(
        /\[\[plugins\."io\.containerd\.transfer\.v1\.local"\.unpack_config\]\]\nplatform = "linux\/amd64"\nsnapshotter = "nix"/,
      );
      const snapshotterToml = await readFile(link("nix-snapshotter.toml"), "utf8");
      expect(snapshotterToml).toContain('mount_mode = "hardlink"');
      // Unset optional keys are left out rather than written as empty values.
      expect(snapshotterToml).not.toContain("external_builder");
      expect(snapshotterToml).not.toContain("metrics_address");

      // containerd's own parser accepts the file and keeps our settings.
      const dump = await exec("containerd", [
        "--config",
        link("containerd.toml"),
        "config",
        "dump",
      ]);
      // 1.6 prints address and type; 1.7 adds capabilities and platform between them.
      expect(dump).toMatch(
        /\[proxy_plugins\.nix\]\s+address = "[^"]+"(?:\n\s+\w+ = .*)*\n\s+type = "snapshot"/,
      );
      expect(dump).toMatch(/snapshotter = "nix"/);

      const containerd = start("containerd", ["--config", link("containerd.toml")], {
        PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
      });
      await waitForSocket(containerdSocket, containerd.child, containerd.log);
      const plugins = await exec("ctr", ["--address", containerdSocket, "plugins", "ls"]);
      expect(plugins).toMatch(/io\.containerd\.snapshotter\.v1\s+nix\s+\S+\s+ok/);
      // CRI starts with `nix` as its snapshotter.
      expect(plugins).toMatch(/io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok/);

      if (!existsSync(daemonMain)) {
        console.warn(`skipping the daemon half: ${daemonMain} is not built yet`);
        return;
      }
      // Run exactly the unit's ExecStart, with the unit's PATH.
      const unit = summary.units["nix-snapshotter"];
      const execStart = String(unit?.serviceConfig.ExecStart);
      expect(execStart).toMatch(
        / --config \/nix\/store\/\S+-nix-snapshotter\.toml --log-level debug$/,
      );
      const [program, ...args] = execStart.split(" ");
      expect(program).toBeDefined();
      const path = [...(unit?.path ?? []).map((entry) => `${entry}/bin`), "/usr/bin", "/bin"].join(
        ":",
      );
      const daemon = start(program ?? "", args, { PATH: path, HOME: dir });
      await waitForSocket(snapshotterSocket, daemon.child, daemon.log);
      // containerd reaches the daemon through the rendered proxy_plugins address.
      await expect(
        exec("ctr", ["--address", containerdSocket, "snapshots", "--snapshotter", "nix", "ls"]),
      ).resolves.toMatch(/KEY\s+PARENT\s+KIND/);
    });

    it.skipIf(!cliHasCommand("load"))(
      "copyToContainerd and preload-containerd import a built image into the system's containerd through the nix snapshotter, and it runs (skips until `nix2container load` exists)",
      async () => {
        // Reuses containerd and the daemon started by the previous test.
        const containerdSocket = join(dir, "containerd.sock");
        expect(existsSync(containerdSocket)).toBe(true);
        const salt = randomBytes(8).toString("hex");
        const link = join(gcRoots, "copy-to-containerd");
        await exec("nix-build", [
          join(testsDir, "images.nix"),
          "-A",
          "copy-to-containerd",
          "-o",
          link,
          ...offline,
          ...baseArgs(),
          "--argstr",
          "salt",
          salt,
          "--argstr",
          "containerdAddress",
          containerdSocket,
          "--argstr",
          "containerdNamespace",
          "nix-interface",
        ]);
        await exec(join(link, "bin/copy-to-containerd"), []);
        const images = await exec("ctr", [
          "--address",
          containerdSocket,
          "--namespace",
          "nix-interface",
          "images",
          "ls",
          "--quiet",
        ]);
        expect(images.split("\n")).toContain("example.org/hello:latest");
        const snapshots = await exec("ctr", [
          "--address",
          containerdSocket,
          "--namespace",
          "nix-interface",
          "snapshots",
          "--snapshotter",
          "nix",
          "ls",
        ]);
        expect(snapshots.trim().split("\n").length).toBeGreaterThan(1);
        // The image runs: its entrypoint lives only in the Nix store (hardlink mode: any release).
        const output = await exec("ctr", [
          "--address",
          containerdSocket,
          "--namespace",
          "nix-interface",
          "run",
          "--rm",
          "--snapshotter",
          "nix",
          "example.org/hello:latest",
          `nix-interface-${salt}`,
        ]);
        expect(output).toMatch(/^hello from \/nix\/store\/[a-z0-9]{32}-busybox-fixture$/m);

        // services.preload-containerd imports the same archive with its generated program.
        const imagesExpression = `import ${nixString(join(testsDir, "images.nix"))} { node = ${nixString(staged.node)}; repo = ${nixString(staged.repo)}; salt = ${nixString(salt)}; }`;
        const preload = join(gcRoots, "preload-containerd");
        await exec("nix-build", [
          join(testsDir, "modules.nix"),
          "-A",
          "preloadScript",
          "-o",
          preload,
          ...offline,
          ...baseArgs(),
          ...moduleArg(`{
            services.preload-containerd = {
              enable = true;
              targets = [ {
                archives = [ (${imagesExpression}).hello-image ];
                address = ${nixString(containerdSocket)};
                namespace = "nix-interface-preload";
              } ];
            };
          }`),
        ]);
        await exec(preload, []);
        const preloaded = await exec("ctr", [
          "--address",
          containerdSocket,
          "--namespace",
          "nix-interface-preload",
          "images",
          "ls",
          "--quiet",
        ]);
        expect(preloaded.split("\n")).toContain("example.org/hello:latest");
      },
    );

    for (const [version, suite] of [
      ["1.7", "trixie"],
      ["2.1", "sid"],
    ] as const) {
      it(`containerd ${version} accepts the rendered config and loads the nix proxy snapshotter`, async (context) => {
        // Newer containerd comes from Debian's newer suites (scripts/fetch-containerd.sh, cached).
        const fetched = spawnSync("bash", [join(repo, "scripts/fetch-containerd.sh"), suite], {
          encoding: "utf8",
        });
        const bin = fetched.stdout.trim();
        if (fetched.status !== 0 || !existsSync(join(bin, "containerd"))) {
          context.skip(`containerd ${version} unavailable: ${fetched.stderr.trim()}`);
          return;
        }
        const base = join(dir, `containerd-${version}`);
        const socket = join(base, "containerd.sock");
        const snapshotterSocket = join(base, "nix-snapshotter.sock");
        const link = join(gcRoots, `containerd-${version}.toml`);
        await exec("nix-build", [
          join(testsDir, "modules.nix"),
          "-A",
          "containerdConfig",
          "-o",
          link,
          ...offline,
          ...baseArgs(),
          ...moduleArg(`{
            virtualisation.containerd = {
              enable = true;
              nixSnapshotterIntegration = true;
              settings = {
                root = ${nixString(join(base, "root"))};
                state = ${nixString(join(base, "state"))};
                grpc.address = ${nixString(socket)};
              };
            };
            services.nix-snapshotter.settings.address = ${nixString(snapshotterSocket)};
          }`),
        ]);
        const dump = await exec(join(bin, "containerd"), ["--config", link, "config", "dump"]);
        expect(dump).toMatch(/\[proxy_plugins\.nix\]\s+(type = .snapshot.\s+)?address = .[^'"]+./);
        if (version === "2.1") {
          // CRI's images plugin (version 3 layout) uses the nix snapshotter.
          expect(dump).toMatch(
            /\[plugins\.'io\.containerd\.cri\.v1\.images'\]\s+snapshotter = 'nix'/,
          );
          // The same when the file is version 3 (a nixpkgs that defaults to it wins over our
          // mkDefault 2): the integration's keys for the version 3 layout still apply.
          const v3 = join(gcRoots, "containerd-2.1-v3.toml");
          await exec("nix-build", [
            join(testsDir, "modules.nix"),
            "-A",
            "containerdConfig",
            "-o",
            v3,
            ...offline,
            ...baseArgs(),
            ...moduleArg(`{
              virtualisation.containerd = { enable = true; nixSnapshotterIntegration = true; settings.version = 3; };
            }`),
          ]);
          const v3Dump = await exec(join(bin, "containerd"), ["--config", v3, "config", "dump"]);
          expect(v3Dump).toMatch(/^version = 3$/m);
          expect(v3Dump).toMatch(
            /\[plugins\.'io\.containerd\.cri\.v1\.images'\]\s+snapshotter = 'nix'/,
          );
          expect(v3Dump).toMatch(
            /\[proxy_plugins\.nix\]\s+type = 'snapshot'\s+address = '\/run\/nix-snapshotter\/nix-snapshotter\.sock'/,
          );
        } else {
          expect(dump).toMatch(/snapshotter = "nix"/);
        }
        const containerd = start(join(bin, "containerd"), ["--config", link], {
          PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${bin}`,
        });
        await waitForSocket(socket, containerd.child, containerd.log);
        const plugins = await exec(join(bin, "ctr"), ["--address", socket, "plugins", "ls"]);
        expect(plugins).toMatch(/io\.containerd\.snapshotter\.v1\s+nix\s+\S+\s+ok/);
        expect(plugins).toMatch(/io\.containerd\.transfer\.v1\s+local\s+\S+\s+ok/);
        expect(plugins).toMatch(/io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok/);
        containerd.child.kill("SIGTERM");
        await new Promise((done) => containerd.child.once("exit", done));
      });
    }

    it("the configuration files shown in docs/install-manual.md are accepted", async (context) => {
      const markdown = await readFile(join(repo, "docs/install-manual.md"), "utf8");
      const blocks = [...markdown.matchAll(/```toml\n([\s\S]*?)```/g)].map(
        (match) => match[1] ?? "",
      );
      const byMarker = new Map(blocks.map((block) => [block.split("\n")[0] ?? "", block]));
      expect([...byMarker.keys()].sort()).toEqual([
        "# containerd 1.6",
        "# containerd 1.7",
        "# containerd 2.x",
        "# nix-snapshotter config",
      ]);
      const versions: [string, string | undefined][] = [
        ["1.6", containerdBin("1.6", "bookworm")],
        ["1.7", containerdBin("1.7", "trixie")],
        ["2.x", fetchContainerd("sid")],
      ];
      for (const [version, bin] of versions) {
        if (bin === undefined) continue;
        const base = join(dir, `doc-${version}`);
        await mkdir(base, { recursive: true });
        const socket = join(base, "containerd.sock");
        const config = join(base, "config.toml");
        // Private root, state and socket around the documented file, unchanged in between.
        await writeFile(
          config,
          `root = ${JSON.stringify(join(base, "root"))}\nstate = ${JSON.stringify(join(base, "state"))}\n${byMarker.get(`# containerd ${version}`)}\n[grpc]\naddress = ${JSON.stringify(socket)}\n`,
        );
        const containerd = start(join(bin, "containerd"), ["--config", config], {
          PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${bin}`,
        });
        await waitForSocket(socket, containerd.child, containerd.log);
        const plugins = await exec(join(bin, "ctr"), ["--address", socket, "plugins", "ls"]);
        expect(plugins, version).toMatch(/io\.containerd\.snapshotter\.v1\s+nix\s+\S+\s+ok/);
        expect(plugins, version).toMatch(/io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok/);
        const dump = await exec(join(bin, "containerd"), ["--config", config, "config", "dump"]);
        expect(dump, version).toMatch(/snapshotter = .nix./);
        containerd.child.kill("SIGTERM");
        await new Promise((done) => containerd.child.once("exit", done));
      }

      if (!existsSync(daemonMain)) {
        context.skip(`${daemonMain} is not built yet`);
        return;
      }
      const config = join(dir, "doc-nix-snapshotter.toml");
      await writeFile(config, byMarker.get("# nix-snapshotter config") ?? "");
      const socket = join(dir, "doc-nix-snapshotter.sock");
      const daemon = start(
        process.execPath,
        [daemonMain, "--config", config, "--address", socket, "--root", join(dir, "doc-root")],
        { PATH: "/usr/bin:/bin", HOME: dir },
      );
      await waitForSocket(socket, daemon.child, daemon.log);
      daemon.child.kill("SIGTERM");
      await new Promise((done) => daemon.child.once("exit", done));
    });

    it("the daemon refuses a rendered config with a key it does not know", async () => {
      if (!existsSync(daemonMain)) {
        console.warn(`skipping: ${daemonMain} is not built yet`);
        return;
      }
      const link = join(gcRoots, "bad-snapshotter.toml");
      await exec("nix-build", [
        join(testsDir, "modules.nix"),
        "-A",
        "snapshotterConfig",
        "-o",
        link,
        ...offline,
        ...baseArgs(),
        ...moduleArg(`{ services.nix-snapshotter.settings.mount_mod = "bind"; }`),
      ]);
      const stderr = await execFailure(process.execPath, [daemonMain, "--config", link]);
      expect(stderr).toMatch(/mount_mod/);
    });
  },
);
