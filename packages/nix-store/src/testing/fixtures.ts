import { createHash, randomBytes } from "node:crypto";
import { accessSync, constants } from "node:fs";
import { mkdir, mkdtemp, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { findOnPath } from "../nix-store.js";
import { NIX_BASE32_ALPHABET } from "../store-path.js";
import { type ExportEntry, exportStream } from "./nar.js";
import { run } from "./run.js";

/** Every fixture roots what it adds to the store under a unique directory below this one. */
export const TEST_GC_ROOTS_PARENT = "/nix/var/nix/gcroots/nix-snapshotter-tests";

/**
 * Why Nix end-to-end tests cannot run here (not root, or a program missing), or undefined when
 * they can. Use with `describe.skipIf(reason !== undefined)`.
 */
export function nixE2eSkipReason(
  programs: readonly string[] = ["nix-store", "nix-build", "nix", "patchelf"],
): string | undefined {
  if (process.getuid?.() !== 0) return "not root";
  for (const program of programs) {
    if (findProgram(program) === undefined) return `${program} not found`;
  }
  return undefined;
}

export function findProgram(program: string): string | undefined {
  return findOnPath(program, process.env);
}

export interface NixFixturesOptions {
  /** A word in the roots directory's name, to tell fixtures apart. Default `fixtures`. */
  label?: string;
  /** Directory holding the Nix programs; default: found on PATH. */
  nixBin?: string;
}

/** A static busybox: `<storePath>/bin/busybox` plus `sh`, `ls`, `cat`... symlinks. */
export interface BusyboxFixture {
  storePath: string;
  /** `<storePath>/bin/sh` */
  shell: string;
  closure: string[];
}

/** A dynamically linked redis-server whose glibc and libraries are separate store paths. */
export interface RedisFixture {
  storePath: string;
  /** `<storePath>/bin/redis-server` */
  executable: string;
  /** The glibc store path (dynamic loader, libc, libm). */
  glibc: string;
  /** Every library store path, by name (`glibc`, `gcc-libs`, `openssl`, `libzstd-1`...). */
  libraries: Record<string, string>;
  closure: string[];
}

/** A shell script whose interpreter (`#!`) is busybox's sh from the store. */
export interface ScriptFixture {
  storePath: string;
  /** `<storePath>/bin/hello`, prints `hello from nix store`. */
  executable: string;
  interpreter: string;
  closure: string[];
}

export interface SyntheticClosureOptions {
  /** Number of store paths (closure info not counted). */
  count: number;
  /** Each path refers to up to this many earlier paths. Default 3. */
  fanout?: number;
  /** Bytes of filler in each path's file. Default 64. */
  fileSize?: number;
  /** Same seed, same paths. Default: random (unique paths per call). */
  seed?: string;
  /** Name prefix of the paths. Default `synthetic`. */
  name?: string;
  /** Also create a closure-info path (a `store-paths` file listing everything). Default true. */
  closureInfo?: boolean;
}

/** Paths made by `nix-store --import` of a generated export stream. */
export interface SyntheticClosure {
  /** Every path, dependencies before dependents (without the closure info). */
  paths: string[];
  /** Paths that nothing else refers to. */
  tops: string[];
  /** References of each path. */
  references: Map<string, string[]>;
  /** The closure-info path, when requested: its closure is `paths` plus itself. */
  closureInfo: string | undefined;
  /** The directory of this closure's roots. */
  rootsDir: string;
  /** Removes this closure's roots (the paths may then be deleted or collected). */
  release(): Promise<void>;
}

export interface NixFixtures {
  /** `/nix/var/nix/gcroots/nix-snapshotter-tests/<unique>`: every root of these fixtures. */
  readonly rootsDir: string;
  readonly storeDir: string;
  busybox(): Promise<BusyboxFixture>;
  redis(): Promise<RedisFixture>;
  script(): Promise<ScriptFixture>;
  syntheticClosure(options: SyntheticClosureOptions): Promise<SyntheticClosure>;
  /** Roots `paths` under `<rootsDir>/<name>/`; returns that directory. */
  root(name: string, paths: readonly string[]): Promise<string>;
  /** Removes the roots made by {@link root} or by a fixture of that name. */
  unroot(name: string): Promise<void>;
  /**
   * Deletes paths from the store with `nix-store --delete` (they must not be alive: release
   * their roots first). Referrers in the list are deleted before their references.
   */
  deletePaths(paths: readonly string[]): Promise<void>;
  /** Removes every root of these fixtures (paths are left to the garbage collector). */
  cleanup(): Promise<void>;
}

const storeDir = "/nix/store";
const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Creates a fixture set with its own roots directory. Call `cleanup()` when done. */
export async function createNixFixtures(options: NixFixturesOptions = {}): Promise<NixFixtures> {
  const label = options.label ?? "fixtures";
  if (!namePattern.test(label))
    throw new Error(`fixture label ${JSON.stringify(label)} is not a plain name`);
  const bin = (program: string) =>
    options.nixBin === undefined ? program : join(options.nixBin, program);
  const rootsDir = join(
    TEST_GC_ROOTS_PARENT,
    `${label}-${process.pid}-${randomBytes(4).toString("hex")}`,
  );
  await mkdir(rootsDir, { recursive: true });
  const workDir = await mkdtemp(join(tmpdir(), "nix-store-fixtures-"));
  const built = new Map<string, Promise<string>>();
  let syntheticCount = 0;

  const checkName = (name: string) => {
    if (!namePattern.test(name))
      throw new Error(`root name ${JSON.stringify(name)} is not a plain name`);
  };

  /** Builds one attribute of the fixture expression, rooted at <rootsDir>/<attribute>. */
  const build = (attribute: string, expression: () => Promise<string>): Promise<string> => {
    let pending = built.get(attribute);
    if (pending === undefined) {
      pending = (async () => {
        const file = join(workDir, `${attribute}.nix`);
        await writeFile(file, await expression());
        const link = join(rootsDir, attribute);
        // nix-build holds temporary roots while it builds and creates the link before it exits.
        // The builders copy host files (/usr/bin, /usr/lib), which a sandboxed build cannot see:
        // sandboxing is off for them whatever the Nix default (off in Debian 12's Nix 2.8, on in
        // newer Nix and NixOS). Root may change it, also through a daemon (a trusted user).
        await run(bin("nix-build"), [
          file,
          "--out-link",
          link,
          "--option",
          "substituters",
          "",
          "--option",
          "sandbox",
          "false",
        ]);
        return readlink(link);
      })();
      built.set(attribute, pending);
      pending.catch(() => built.delete(attribute));
    }
    return pending;
  };

  const closureOf = async (path: string) =>
    (await run(bin("nix-store"), ["--query", "--requisites", path])).stdout
      .split("\n")
      .filter(Boolean)
      .sort();

  const busybox = async (): Promise<BusyboxFixture> => {
    const storePath = await build("busybox", async () => busyboxExpression(await hostBusybox()));
    return { storePath, shell: `${storePath}/bin/sh`, closure: await closureOf(storePath) };
  };

  const fixtures: NixFixtures = {
    rootsDir,
    storeDir,
    busybox,

    async redis() {
      const plan = await redisPlan();
      const storePath = await build("redis", async () => redisExpression(plan));
      const closure = await closureOf(storePath);
      const libraries: Record<string, string> = {};
      for (const group of plan.groups) {
        const path = closure.find((entry) => entry.endsWith(`-${group.name}`));
        if (path === undefined) throw new Error(`redis closure lacks ${group.name}`);
        libraries[group.name] = path;
      }
      return {
        storePath,
        executable: `${storePath}/bin/redis-server`,
        glibc: libraries.glibc!,
        libraries,
        closure,
      };
    },

    async script() {
      const shell = (await busybox()).shell;
      const storePath = await build("script", async () => scriptExpression(await hostBusybox()));
      return {
        storePath,
        executable: `${storePath}/bin/hello`,
        interpreter: shell,
        closure: await closureOf(storePath),
      };
    },

    async syntheticClosure(closureOptions) {
      syntheticCount += 1;
      const name = closureOptions.name ?? "synthetic";
      checkName(name);
      const graph = syntheticGraph({ ...closureOptions, name });
      const directory = join(rootsDir, `${name}-${syntheticCount}`);
      // Roots first (links to paths that do not exist yet are roots already), then import.
      await mkdir(directory, { recursive: true });
      await linkAll(
        directory,
        graph.entries.map((entry) => entry.storePath),
      );
      await run(bin("nix-store"), ["--import"], { stdin: exportStream(graph.entries) });
      const paths = graph.entries
        .map((entry) => entry.storePath)
        .filter((path) => path !== graph.closureInfo);
      return {
        paths,
        tops: graph.tops,
        references: new Map(graph.entries.map((entry) => [entry.storePath, [...entry.references]])),
        closureInfo: graph.closureInfo,
        rootsDir: directory,
        release: () => rm(directory, { recursive: true, force: true }),
      };
    },

    async root(name, paths) {
      checkName(name);
      const directory = join(rootsDir, name);
      await mkdir(directory, { recursive: true });
      await linkAll(directory, paths);
      return directory;
    },

    async unroot(name) {
      checkName(name);
      await rm(join(rootsDir, name), { recursive: true, force: true });
      built.delete(name);
    },

    async deletePaths(paths) {
      if (paths.length === 0) return;
      await run(bin("nix-store"), ["--delete", ...paths]);
    },

    async cleanup() {
      await rm(rootsDir, { recursive: true, force: true });
      await rm(workDir, { recursive: true, force: true });
    },
  };
  return fixtures;
}

async function linkAll(directory: string, paths: readonly string[]): Promise<void> {
  const batch = 64;
  for (let start = 0; start < paths.length; start += batch) {
    await Promise.all(
      paths.slice(start, start + batch).map(async (path) => {
        await symlink(path, join(directory, basename(path))).catch(
          (error: NodeJS.ErrnoException) => {
            if (error.code !== "EEXIST") throw error;
          },
        );
      }),
    );
  }
}

async function hostBusybox(): Promise<string> {
  for (const candidate of ["/usr/bin/busybox", "/bin/busybox"]) {
    try {
      accessSync(candidate, constants.X_OK);
      const { stdout } = await run("ldd", [candidate]).catch(() => ({
        stdout: "not a dynamic executable",
      }));
      if (!/=>/.test(stdout)) return candidate;
    } catch {
      // next
    }
  }
  throw new Error("no static busybox found (install busybox-static)");
}

// ---------------------------------------------------------------------------------------------
// Nix expressions. Builders are /bin/sh scripts run with sandboxing off (see `build` above) that
// copy host files into $out; dependencies are passed as attributes, so Nix sees them as inputs
// and finds the store paths written into the outputs as references.

const nixString = (value: string) =>
  `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\$\{/g, "\\${")}"`;

function derivation(
  name: string,
  script: string,
  dependencies: Record<string, string> = {},
): string {
  const inputs = Object.entries(dependencies)
    .map(([variable, attribute]) => `${variable} = ${attribute};`)
    .join(" ");
  return `builtins.derivation { name = ${nixString(name)}; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${nixString(`set -eu\n${script}`)} ]; PATH = "/usr/bin:/bin"; ${inputs} }`;
}

const busyboxApplets = ["sh", "ls", "cat", "echo", "env", "sleep", "true", "false", "id", "mount"];

function busyboxDerivation(hostPath: string): string {
  return derivation(
    "busybox-static",
    [
      "mkdir -p $out/bin",
      `cp ${hostPath} $out/bin/busybox`,
      "chmod 555 $out/bin/busybox",
      ...busyboxApplets.map((applet) => `ln -s busybox $out/bin/${applet}`),
    ].join("\n"),
  );
}

function busyboxExpression(hostPath: string): string {
  return busyboxDerivation(hostPath);
}

function scriptExpression(hostBusyboxPath: string): string {
  const script = [
    "mkdir -p $out/bin",
    'printf "#!%s/bin/sh\\necho hello from nix store\\n" "$busybox" > $out/bin/hello',
    "chmod 555 $out/bin/hello",
  ].join("\n");
  return `let busybox = ${busyboxDerivation(hostBusyboxPath)}; in ${derivation("hello-script", script, { busybox: "busybox" })}`;
}

interface LibraryGroup {
  /** Store path name, e.g. `glibc`. */
  name: string;
  /** Host files (resolved) copied into `$out/lib` under their soname. */
  files: { soname: string; hostPath: string; needs: string[] }[];
}

interface RedisPlan {
  executable: string;
  executableNeeds: string[];
  groups: LibraryGroup[];
  /** Group of each soname. */
  groupOf: Map<string, string>;
}

const glibcSonames =
  /^(ld-linux[^/]*\.so\.\d+|libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libresolv\.so\.2)$/;
const gccSonames = /^(libstdc\+\+\.so\.6|libgcc_s\.so\.1|libatomic\.so\.1)$/;

function groupName(soname: string): string {
  if (glibcSonames.test(soname)) return "glibc";
  if (gccSonames.test(soname)) return "gcc-libs";
  if (/^lib(ssl|crypto)\.so/.test(soname)) return "openssl";
  const match = /^(lib[A-Za-z0-9_+-]+?)\.so\.(\d+)/.exec(soname);
  return match === null ? soname.replace(/[^A-Za-z0-9._-]/g, "_") : `${match[1]}-${match[2]}`;
}

/** `ldd`'s resolved dependencies of one ELF file: soname -> host path. */
async function lddMap(file: string): Promise<Map<string, string>> {
  const { stdout } = await run("ldd", [file]);
  const map = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const arrow = /^\s*(\S+)\s+=>\s+(\/\S+)/.exec(line);
    if (arrow !== null) {
      map.set(arrow[1]!, arrow[2]!);
      continue;
    }
    const loader = /^\s*(\/\S*ld-linux[^\s]*)\s/.exec(line);
    if (loader !== null) map.set(basename(loader[1]!), loader[1]!);
  }
  return map;
}

/** Direct DT_NEEDED entries of an ELF file. */
async function neededOf(file: string): Promise<string[]> {
  const { stdout } = await run("patchelf", ["--print-needed", file]);
  return stdout.split("\n").filter(Boolean);
}

let redisPlanPromise: Promise<RedisPlan> | undefined;

function redisPlan(): Promise<RedisPlan> {
  redisPlanPromise ??= (async () => {
    const executable = "/usr/bin/redis-server";
    try {
      accessSync(executable, constants.X_OK);
    } catch {
      throw new Error("redis-server not found (install Debian's redis-server)");
    }
    const resolved = await lddMap(executable);
    const groups = new Map<string, LibraryGroup>();
    const groupOf = new Map<string, string>();
    for (const [soname, hostPath] of resolved) {
      const name = groupName(soname);
      groupOf.set(soname, name);
      let group = groups.get(name);
      if (group === undefined) {
        group = { name, files: [] };
        groups.set(name, group);
      }
      const needs = /ld-linux/.test(soname) ? [] : await neededOf(hostPath);
      group.files.push({ soname, hostPath, needs });
    }
    if (!groups.has("glibc")) throw new Error("redis-server does not link glibc dynamically");
    return {
      executable,
      executableNeeds: await neededOf(executable),
      groups: [...groups.values()],
      groupOf,
    };
  })();
  redisPlanPromise.catch(() => {
    redisPlanPromise = undefined;
  });
  return redisPlanPromise;
}

const variableOf = (group: string) => `dep_${group.replace(/[^A-Za-z0-9]/g, "_")}`;
const attributeOf = (group: string) => `g_${group.replace(/[^A-Za-z0-9]/g, "_")}`;

function redisExpression(plan: RedisPlan): string {
  // Order groups so that each comes after the groups it needs (glibc first).
  const dependenciesOf = (group: LibraryGroup) => {
    const needed = new Set<string>();
    for (const file of group.files) {
      for (const soname of file.needs) {
        const other = plan.groupOf.get(soname);
        if (other !== undefined && other !== group.name) needed.add(other);
      }
    }
    return [...needed].sort();
  };
  const loader = plan.groups
    .find((group) => group.name === "glibc")!
    .files.find((file) => /ld-linux/.test(file.soname))!;
  const bindings: string[] = [];
  for (const group of plan.groups) {
    const dependencies = dependenciesOf(group);
    const inputs = Object.fromEntries(
      dependencies.map((name) => [variableOf(name), attributeOf(name)]),
    );
    const rpath = ["$out/lib", ...dependencies.map((name) => `$${variableOf(name)}/lib`)].join(":");
    const lines = ["mkdir -p $out/lib"];
    for (const file of group.files) {
      lines.push(
        `cp -L ${file.hostPath} $out/lib/${file.soname}`,
        `chmod 755 $out/lib/${file.soname}`,
      );
      if (!/ld-linux|^libc\.so/.test(file.soname) && file.needs.length > 0) {
        lines.push(`patchelf --set-rpath ${rpath} $out/lib/${file.soname}`);
      }
    }
    lines.push("chmod 555 $out/lib/*");
    bindings.push(
      `${attributeOf(group.name)} = ${derivation(group.name, lines.join("\n"), inputs)};`,
    );
  }
  const executableGroups = [
    ...new Set(
      plan.executableNeeds
        .map((soname) => plan.groupOf.get(soname))
        .filter((name) => name !== undefined),
    ),
    "glibc",
  ];
  const uniqueGroups = [...new Set(executableGroups)].sort();
  const inputs = Object.fromEntries(
    uniqueGroups.map((name) => [variableOf(name), attributeOf(name)]),
  );
  const rpath = uniqueGroups.map((name) => `$${variableOf(name)}/lib`).join(":");
  const script = [
    "mkdir -p $out/bin",
    `cp -L ${plan.executable} $out/bin/redis-server`,
    "chmod 755 $out/bin/redis-server",
    `patchelf --set-interpreter $${variableOf("glibc")}/lib/${loader.soname} --set-rpath ${rpath} $out/bin/redis-server`,
    "chmod 555 $out/bin/redis-server",
  ].join("\n");
  return `let ${bindings.join("\n")}\nin ${derivation("redis-server", script, inputs)}`;
}

// ---------------------------------------------------------------------------------------------
// Synthetic closures.

interface SyntheticGraph {
  entries: ExportEntry[];
  tops: string[];
  closureInfo: string | undefined;
}

function syntheticGraph(options: SyntheticClosureOptions & { name: string }): SyntheticGraph {
  const { count, name } = options;
  if (!Number.isSafeInteger(count) || count < 1 || count > 100_000) {
    throw new Error(`synthetic closure count must be 1..100000, got ${count}`);
  }
  const fanout = options.fanout ?? 3;
  const filler = "x".repeat(options.fileSize ?? 64);
  const seed = options.seed ?? randomBytes(16).toString("hex");
  const digest = (label: string) => createHash("sha256").update(`${seed}:${label}`).digest();
  const hashFor = (label: string) => {
    const bytes = digest(label);
    let hash = "";
    for (let index = 0; index < 32; index += 1) hash += NIX_BASE32_ALPHABET[bytes[index]! % 32];
    return hash;
  };
  const width = String(count).length;
  const paths = Array.from(
    { length: count },
    (_, index) =>
      `${storeDir}/${hashFor(`path-${index}`)}-${name}-${String(index).padStart(width, "0")}`,
  );
  const referenced = new Set<number>();
  const entries: ExportEntry[] = paths.map((path, index) => {
    const chosen = new Set<number>();
    const bytes = digest(`refs-${index}`);
    for (let pick = 0; pick < Math.min(fanout, index); pick += 1) {
      chosen.add(bytes.readUInt32LE(pick * 4) % index);
    }
    for (const reference of chosen) referenced.add(reference);
    const references = [...chosen].sort((a, b) => a - b).map((reference) => paths[reference]!);
    const contents = `synthetic path ${index} of ${count}\n${references.join("\n")}\n${filler}\n`;
    return {
      storePath: path,
      references,
      node: { type: "directory", entries: { data: { type: "regular", contents } } },
    };
  });
  const tops = paths.filter((_, index) => !referenced.has(index));
  let closureInfo: string | undefined;
  if (options.closureInfo ?? true) {
    closureInfo = `${storeDir}/${hashFor("closure-info")}-${name}-closure-info`;
    entries.push({
      storePath: closureInfo,
      references: [...paths],
      node: {
        type: "directory",
        entries: {
          "store-paths": { type: "regular", contents: `${[...paths].sort().join("\n")}\n` },
        },
      },
    });
  }
  return { entries, tops, closureInfo };
}
