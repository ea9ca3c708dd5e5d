import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The containerd releases the harness knows how to run, and where each comes from. */
export type ContainerdVersion = "1.6" | "1.7" | "2.1";

/** containerd's binaries for one release. */
export interface ContainerdBins {
  /** The directory that holds them (placed on containerd's PATH after runc's directory). */
  dir: string;
  containerd: string;
  ctr: string;
  shim: string;
}

export interface UnpackConfig {
  /** Default `linux/amd64` (the harness only runs on x86_64 Linux). */
  platform?: string;
  snapshotter: string;
}

export interface CriOptions {
  /** Image used for pod sandboxes (default `registry.k8s.io/pause:3.9`, never pulled unless a pod runs). */
  sandboxImage?: string;
  /** Snapshotter CRI unpacks images with (default `overlayfs`). */
  snapshotter?: string;
  /** Directory of CNI plugins (default `/usr/lib/cni`, Debian's containernetworking-plugins). */
  cniBinDir?: string;
  /** Directory of CNI network configs (default: an empty private directory). */
  cniConfDir?: string;
  /**
   * `restrict_oom_score_adj = true`: needed where the process may not lower oom_score_adj (no
   * CAP_SYS_RESOURCE, as on this project's VMs), or runc fails to start pod sandboxes (-998).
   */
  restrictOomScoreAdj?: boolean;
}

export interface StartContainerdOptions {
  /**
   * Default: the system's release (Debian 12: 1.6, Debian 13: 1.7), else "1.6". Other releases
   * come from scripts/fetch-containerd.sh (see {@link findContainerd}).
   */
  version?: ContainerdVersion;
  /** `[proxy_plugins.<name>] type = "snapshot" address = <socket>` for each entry. */
  proxyPlugins?: Record<string, string>;
  /** TOML appended verbatim to the generated config (use the config version of `version`). */
  extraConfig?: string;
  /** Enable the CRI plugin (default: disabled). `true` means default CRI options. */
  cri?: boolean | CriOptions;
  /** Shorthand for `cri: { snapshotter }`; implies CRI enabled. */
  snapshotterForCri?: string;
  /**
   * Transfer service unpack platforms (`[[plugins."io.containerd.transfer.v1.local".unpack_config]]`).
   * On 1.7 and 2.x the default names the first proxy plugin (else `overlayfs`): without it the
   * Transfer service (2.x `ctr images pull/import`, 1.7 `--local=false`) refuses to unpack ("no
   * unpack platforms defined"). 1.6 has no Transfer service: no default. `[]` writes none.
   */
  unpackConfig?: UnpackConfig[];
  /** containerd's log level (default `info`). The log is kept in `<dir>/containerd.log`. */
  logLevel?: "trace" | "debug" | "info" | "warn" | "error";
  /** Milliseconds to wait for the API to answer (default 60 000). */
  readyTimeoutMs?: number;
}

export interface CtrOptions {
  /** Namespace (`-n`); default: the instance's private namespace (see `Containerd.namespace`). */
  namespace?: string;
  /** Written to ctr's stdin. */
  input?: string | Uint8Array;
  /** Return a non-zero exit instead of throwing. */
  allowFailure?: boolean;
  /** Kill ctr after this many milliseconds (default 120 000). */
  timeoutMs?: number;
  /** Extra environment for ctr. */
  env?: Record<string, string>;
}

export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Containerd {
  version: ContainerdVersion;
  /** The full version line containerd printed (`containerd github.com/... 1.7.24~ds1 ...`). */
  versionLine: string;
  /** gRPC socket. */
  address: string;
  /** The private directory holding root, state, config, sockets and the log. */
  dir: string;
  root: string;
  state: string;
  configPath: string;
  logPath: string;
  /**
   * Namespace the `ctr` helper uses unless told otherwise: unique per instance, because runc's
   * state (`/run/containerd/runc/<namespace>/<id>`) is shared by every containerd on the host.
   */
  namespace: string;
  bins: ContainerdBins;
  /** Environment to run containerd's binaries with (runc's directory first on PATH). */
  env: NodeJS.ProcessEnv;
  /** Runs `ctr --address <address> -n <namespace> ...args`; throws on a non-zero exit. */
  ctr(args: readonly string[], options?: CtrOptions): Promise<CtrResult>;
  /** containerd's log so far. */
  log(): Promise<string>;
  /** Kills tasks and shims, stops containerd, unmounts leftovers and removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function findRepositoryScript(): string | undefined {
  const fromEnvironment = process.env.NIX_SNAPSHOTTER_FETCH_CONTAINERD;
  if (fromEnvironment) return fromEnvironment;
  let directory = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(directory, "scripts", "fetch-containerd.sh");
    if (existsSync(candidate)) return candidate;
    const parent = dirname(directory);
    if (parent === directory) return undefined;
    directory = parent;
  }
}

function binsIn(dir: string): ContainerdBins {
  return {
    dir,
    containerd: join(dir, "containerd"),
    ctr: join(dir, "ctr"),
    shim: join(dir, "containerd-shim-runc-v2"),
  };
}

/** The Debian suite that packages each release (bookworm = Debian 12, trixie = Debian 13). */
const suites: Record<ContainerdVersion, string> = {
  "1.6": "bookworm",
  "1.7": "trixie",
  "2.1": "sid",
};

const knownVersions = Object.keys(suites) as ContainerdVersion[];

/** The release named by a `containerd --version` line (`... 1.7.24~ds1 ...`), if one we know. */
export function containerdVersionOf(versionLine: string): ContainerdVersion | undefined {
  const match = /\sv?(\d+)\.(\d+)\.\d+/.exec(versionLine);
  if (match === null) return undefined;
  const release = `${match[1]}.${match[2]}`;
  return knownVersions.find((version) => version === release);
}

let systemVersion: { version: ContainerdVersion | undefined } | undefined;

/**
 * The release of the system's containerd (`/usr/bin/containerd`, Debian's package: 1.6 on
 * Debian 12, 1.7 on Debian 13), or undefined when none is installed or it is none we know.
 * Asked once per process.
 */
export function systemContainerdVersion(): ContainerdVersion | undefined {
  if (systemVersion === undefined) {
    let version: ContainerdVersion | undefined;
    try {
      const line = execFileSync("/usr/bin/containerd", ["--version"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
        timeout: 30_000,
      });
      version = containerdVersionOf(line);
    } catch {
      version = undefined;
    }
    systemVersion = { version };
  }
  return systemVersion.version;
}

/**
 * Finds the binaries of a containerd release: the system's own (`/usr/bin`) when it is that
 * release, else Debian's package of the suite that has it, downloaded once through
 * scripts/fetch-containerd.sh (1.6 from bookworm, 1.7 from trixie, 2.1 from sid). Synchronous
 * so that it can decide `describe.skipIf(...)` at collection time. Override with
 * `NIX_SNAPSHOTTER_CONTAINERD_<1_6|1_7|2_1>_DIR`. Returns `undefined` when the release cannot
 * be had (not packaged, no network, not root), with the reason in `reason`.
 */
export function findContainerd(
  version: ContainerdVersion,
): { bins: ContainerdBins } | { bins: undefined; reason: string } {
  const override = process.env[`NIX_SNAPSHOTTER_CONTAINERD_${version.replace(".", "_")}_DIR`];
  const check = (bins: ContainerdBins) =>
    [bins.containerd, bins.ctr, bins.shim].every((path) => existsSync(path));
  if (override) {
    const bins = binsIn(override);
    return check(bins) ? { bins } : { bins: undefined, reason: `no containerd in ${override}` };
  }
  if (systemContainerdVersion() === version) {
    const bins = binsIn("/usr/bin");
    if (check(bins)) return { bins };
  }
  const script = findRepositoryScript();
  if (!script) return { bins: undefined, reason: "scripts/fetch-containerd.sh not found" };
  try {
    const output = execFileSync("bash", [script, suites[version]], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 300_000,
    });
    const dir = output.trim().split("\n").at(-1) ?? "";
    const bins = binsIn(dir);
    return check(bins)
      ? { bins }
      : { bins: undefined, reason: `fetch-containerd.sh printed ${JSON.stringify(dir)}` };
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? String(error);
    return {
      bins: undefined,
      reason: `containerd ${version} unavailable: ${stderr.trim().split("\n").at(-1)}`,
    };
  }
}

/** True when this process can run containerd with the harness (root, runc present). */
export function canRunContainerd(): boolean {
  return process.getuid?.() === 0 && findRunc() !== undefined;
}

/**
 * Runs `image` to completion in a new container `id` unpacked with `snapshotter`
 * (`ctr run --rm --snapshotter <snapshotter> <image> <id> [command...]`) and returns what it
 * wrote to standard output. Rejects when ctr or the container fails.
 */
export async function runContainer(
  containerd: Containerd,
  snapshotter: string,
  image: string,
  id: string,
  ...command: string[]
): Promise<string> {
  const { stdout } = await containerd.ctr([
    "run",
    "--rm",
    "--snapshotter",
    snapshotter,
    image,
    id,
    ...command,
  ]);
  return stdout;
}

/**
 * Why a test of containerd `version` cannot run here (not root, no runc, or that release not
 * to be had), or undefined when it can. Use with `describe.skipIf(reason !== undefined)`.
 */
export function containerdSkipReason(version: ContainerdVersion): string | undefined {
  if (!canRunContainerd()) return "needs root and runc";
  const found = findContainerd(version);
  return found.bins === undefined ? found.reason : undefined;
}

function findRunc(): string | undefined {
  for (const dir of defaultPath.split(":")) {
    const candidate = join(dir, "runc");
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

function quote(value: string): string {
  return JSON.stringify(value);
}

function renderConfig(
  version: ContainerdVersion,
  paths: { root: string; state: string; address: string; debugAddress: string; cniConf: string },
  options: StartContainerdOptions,
): string {
  const v2 = version.startsWith("2.");
  const lines: string[] = [];
  lines.push(`version = ${v2 ? 3 : 2}`);
  lines.push(`root = ${quote(paths.root)}`);
  lines.push(`state = ${quote(paths.state)}`);
  const criOptions: CriOptions | undefined =
    options.cri || options.snapshotterForCri
      ? {
          ...(typeof options.cri === "object" ? options.cri : {}),
          ...(options.snapshotterForCri ? { snapshotter: options.snapshotterForCri } : {}),
        }
      : undefined;
  if (!criOptions) {
    lines.push(
      v2
        ? `disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox"]`
        : `disabled_plugins = ["io.containerd.grpc.v1.cri"]`,
    );
  }
  lines.push("", "[grpc]", `  address = ${quote(paths.address)}`);
  lines.push("", "[ttrpc]", `  address = ${quote(`${paths.address}.ttrpc`)}`);
  lines.push(
    "",
    "[debug]",
    `  address = ${quote(paths.debugAddress)}`,
    `  level = ${quote(options.logLevel ?? "info")}`,
  );
  for (const [name, socket] of Object.entries(options.proxyPlugins ?? {})) {
    lines.push("", `[proxy_plugins.${quote(name)}]`, `  type = "snapshot"`);
    lines.push(`  address = ${quote(socket)}`);
  }
  const unpack =
    options.unpackConfig ??
    (version !== "1.6"
      ? [{ snapshotter: Object.keys(options.proxyPlugins ?? {})[0] ?? "overlayfs" }]
      : ([] as UnpackConfig[]));
  for (const entry of unpack) {
    lines.push("", `[[plugins."io.containerd.transfer.v1.local".unpack_config]]`);
    lines.push(`  platform = ${quote(entry.platform ?? "linux/amd64")}`);
    lines.push(`  snapshotter = ${quote(entry.snapshotter)}`);
  }
  if (criOptions) {
    const sandbox = criOptions.sandboxImage ?? "registry.k8s.io/pause:3.9";
    const snapshotter = criOptions.snapshotter ?? "overlayfs";
    const cniBin = criOptions.cniBinDir ?? "/usr/lib/cni";
    const cniConf = criOptions.cniConfDir ?? paths.cniConf;
    if (v2) {
      lines.push("", `[plugins."io.containerd.cri.v1.images"]`);
      lines.push(`  snapshotter = ${quote(snapshotter)}`);
      lines.push("", `[plugins."io.containerd.cri.v1.images".pinned_images]`);
      lines.push(`  sandbox = ${quote(sandbox)}`);
      if (criOptions.restrictOomScoreAdj) {
        lines.push(
          "",
          `[plugins."io.containerd.cri.v1.runtime"]`,
          "  restrict_oom_score_adj = true",
        );
      }
      lines.push("", `[plugins."io.containerd.cri.v1.runtime".cni]`);
      lines.push(`  bin_dirs = [${quote(cniBin)}]`, `  conf_dir = ${quote(cniConf)}`);
    } else {
      lines.push("", `[plugins."io.containerd.grpc.v1.cri"]`);
      lines.push(`  sandbox_image = ${quote(sandbox)}`);
      if (criOptions.restrictOomScoreAdj) lines.push("  restrict_oom_score_adj = true");
      lines.push("", `[plugins."io.containerd.grpc.v1.cri".containerd]`);
      lines.push(`  snapshotter = ${quote(snapshotter)}`);
      lines.push("", `[plugins."io.containerd.grpc.v1.cri".cni]`);
      lines.push(`  bin_dir = ${quote(cniBin)}`, `  conf_dir = ${quote(cniConf)}`);
    }
  }
  if (options.extraConfig) lines.push("", options.extraConfig);
  return `${lines.join("\n")}\n`;
}

function runCollect(
  file: string,
  args: readonly string[],
  options: { env: NodeJS.ProcessEnv; input?: string | Uint8Array; timeoutMs: number },
): Promise<CtrResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, { env: options.env, stdio: ["pipe", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolvePromise({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
      });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
  });
}

function delay(milliseconds: number): Promise<void> {
  return new Promise((resolvePromise) => setTimeout(resolvePromise, milliseconds));
}

/** PIDs of processes whose command line contains `needle` (a containerd address or directory). */
export async function processesMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8");
      if (cmdline.split("\0").some((argument) => argument.includes(needle))) pids.push(pid);
    } catch {
      // The process exited while we looked.
    }
  }
  return pids;
}

async function childrenOf(pid: number): Promise<number[]> {
  try {
    const tasks = await readdir(`/proc/${pid}/task`);
    const children: number[] = [];
    for (const task of tasks) {
      const text = await readFile(`/proc/${pid}/task/${task}/children`, "utf8").catch(() => "");
      for (const child of text.trim().split(/\s+/)) if (child) children.push(Number(child));
    }
    return children;
  } catch {
    return [];
  }
}

function decodeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(Number.parseInt(octal, 8)),
  );
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const text = readFileSync("/proc/self/mountinfo", "utf8");
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const found: string[] = [];
  for (const line of text.split("\n")) {
    const field = line.split(" ")[4];
    if (!field) continue;
    const mountPoint = decodeMountPath(field);
    if (mountPoint === dir || mountPoint.startsWith(prefix)) found.push(mountPoint);
  }
  return found.sort((a, b) => b.length - a.length);
}

async function unmountAll(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) return;
    for (const mountPoint of mounts) {
      try {
        execFileSync("umount", ["-l", mountPoint], { stdio: "ignore" });
      } catch {
        // Already gone, or a parent was lazily detached first.
      }
    }
  }
}

/**
 * Starts a private containerd (root, state, sockets, config and log in a fresh temporary
 * directory) and waits until its API answers. Tasks, shims and mounts it leaves are cleaned up by
 * `stop()`. Root only.
 */
export async function startContainerd(options: StartContainerdOptions = {}): Promise<Containerd> {
  const version = options.version ?? systemContainerdVersion() ?? "1.6";
  const found = findContainerd(version);
  if (!found.bins) throw new Error(found.reason);
  const bins = found.bins;
  const runc = findRunc();
  if (!runc) throw new Error("runc not found on PATH");

  const dir = mkdtempSync(join(tmpdir(), `containerd-${version}-`));
  const root = join(dir, "root");
  const state = join(dir, "state");
  const address = join(dir, "containerd.sock");
  const configPath = join(dir, "config.toml");
  const logPath = join(dir, "containerd.log");
  const cniConf = join(dir, "cni");
  await Promise.all([root, state, cniConf].map((path) => mkdir(path, { recursive: true })));
  await writeFile(
    configPath,
    renderConfig(
      version,
      { root, state, address, debugAddress: join(dir, "debug.sock"), cniConf },
      options,
    ),
  );

  // runc's directory first (the system's runc; newer suites' runc needs a newer glibc), then the
  // release's own shim and ctr, then the system.
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: [dirname(runc), bins.dir, defaultPath].join(":"),
  };
  delete env.CONTAINERD_ADDRESS;
  delete env.CONTAINERD_NAMESPACE;
  const namespace = `test-${randomBytes(4).toString("hex")}`;

  const logFd = openSync(logPath, "a");
  let child: ChildProcess;
  try {
    child = spawn(bins.containerd, ["--config", configPath], {
      env,
      stdio: ["ignore", logFd, logFd],
    });
  } finally {
    closeSync(logFd);
  }
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolvePromise) => {
    child.on("exit", (code, signal) => {
      exited = { code, signal };
      resolvePromise();
    });
    child.on("error", () => resolvePromise());
  });

  const ctr = async (args: readonly string[], ctrOptions: CtrOptions = {}): Promise<CtrResult> => {
    const result = await runCollect(
      bins.ctr,
      ["--address", address, "--namespace", ctrOptions.namespace ?? namespace, ...args],
      {
        env: { ...env, ...ctrOptions.env },
        ...(ctrOptions.input !== undefined ? { input: ctrOptions.input } : {}),
        timeoutMs: ctrOptions.timeoutMs ?? 120_000,
      },
    );
    if (result.code !== 0 && !ctrOptions.allowFailure) {
      throw new Error(
        `ctr ${args.join(" ")} exited with ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`,
      );
    }
    return result;
  };
  const log = () => readFile(logPath, "utf8").catch(() => "");

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (!exited) {
      // Kill and delete every task in every namespace, so that shims exit on their own.
      const namespaces = await ctr(["namespaces", "list", "--quiet"], {
        allowFailure: true,
        timeoutMs: 10_000,
      });
      for (const ns of namespaces.stdout.split("\n").filter(Boolean)) {
        const tasks = await ctr(["tasks", "list", "--quiet"], {
          namespace: ns,
          allowFailure: true,
          timeoutMs: 10_000,
        });
        for (const id of tasks.stdout.split("\n").filter(Boolean)) {
          await ctr(["tasks", "kill", "--signal", "SIGKILL", "--all", id], {
            namespace: ns,
            allowFailure: true,
            timeoutMs: 10_000,
          });
          await ctr(["tasks", "delete", "--force", id], {
            namespace: ns,
            allowFailure: true,
            timeoutMs: 15_000,
          });
        }
      }
      child.kill("SIGTERM");
      const timeout = delay(15_000).then(() => "timeout" as const);
      if ((await Promise.race([exitPromise, timeout])) === "timeout") {
        child.kill("SIGKILL");
        await exitPromise;
      }
    }
    // Shims (and their containers) that outlived containerd carry our address on their
    // command line (`-address <socket>`).
    for (const pid of await processesMentioning(address)) {
      for (const grandchild of await childrenOf(pid)) {
        try {
          process.kill(grandchild, "SIGKILL");
        } catch {}
      }
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    await delay(100);
    await unmountAll(dir);
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  let versionLine = "";
  for (;;) {
    if (exited) {
      const text = await log();
      await stop();
      throw new Error(
        `containerd ${version} exited (${exited.code ?? exited.signal}) before it was ready:\n${text.slice(-4000)}`,
      );
    }
    if (existsSync(address)) {
      const result = await runCollect(bins.ctr, ["--address", address, "version"], {
        env,
        timeoutMs: 10_000,
      });
      if (result.code === 0) {
        versionLine = (
          await runCollect(bins.containerd, ["--version"], { env, timeoutMs: 10_000 })
        ).stdout.trim();
        break;
      }
    }
    if (Date.now() > deadline) {
      const text = await log();
      await stop();
      throw new Error(`containerd ${version} did not answer on ${address}:\n${text.slice(-4000)}`);
    }
    await delay(100);
  }

  return {
    version,
    versionLine,
    address,
    dir,
    root,
    state,
    configPath,
    logPath,
    namespace,
    bins,
    env,
    ctr,
    log,
    stop,
  };
}
