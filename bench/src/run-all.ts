/**
 * `pnpm bench` at the root: runs every benchmark of the project and writes docs/benchmarks.md,
 * docs/benchmarks/start-time.svg and the figures of the README's Benchmarks section.
 *
 * The benchmarks of one package each (realise, image, mounts, pull) run as child processes with
 * `--json` (their last stdout line is `{"figures": [...]}`); those that need the daemon and
 * containerd together run in this process.
 * A benchmark that fails becomes a "not measured yet" row naming the reason; the run goes on.
 *
 * Flags: `--only a,b` runs only those benchmarks (names below) and `--no-write` prints without
 * writing files. Environment: BENCH_START_SIZES (default 10,100,1000,5000), BENCH_START_RUNS
 * (default 15), BENCH_START_BIND_RUNS (default 5), plus each benchmark's own (NIX_STORE_BENCH_SIZES, BENCH_ITERATIONS...).
 */
import { execFile, spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { cpus, loadavg, release, totalmem } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { benchContainerStart, type StartPoint, startSection } from "./container-start.js";
import { goalSections } from "./goals.js";
import { type Figure, type Missing, repositoryRoot } from "./harness.js";
import { benchProxyCycles, proxyCyclesSection } from "./proxy-cycles.js";
import { benchRegistryBytes, registrySection } from "./registry-bytes.js";
import { renderMarkdown, renderReadmeFigures, renderStartPlot, type Section } from "./report.js";
import { benchSnapshotCycles, cyclesSection } from "./snapshot-cycles.js";

const execFileAsync = promisify(execFile);

const sections: Section[] = [
  {
    title: "Roots and realise vs per-path sequential",
    description:
      "GC roots plus `nix-store --realise` of N store paths that are already valid: ours is one batch (roots first, then one Nix process); the baseline is the Go implementation's loop of one `nix-store --realise --add-root` per path.",
    source: "`bench/src/realise.ts`",
  },
  {
    title: "Substitution from a slow cache",
    description:
      "The same two strategies substituting 200 store paths from a local HTTP binary cache that waits 20 ms before each answer.",
    source: "`bench/src/realise.ts`",
  },
  {
    title: goalSections.image,
    description:
      "Ours: `buildImage` + `writeImageArchive` of a synthetic closure of N store paths (empty directories, read through `createMemoryFileSystem`), in the bench's process: the mountpoint layer planned, written as tar, hashed and gzipped at level 6 (on the thread pool), the config and the manifest with per-path annotations (the default form for a list of store paths), then the whole OCI archive in memory. Baseline: `tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - nix | gzip -n -6` (GNU tar and gzip, two processes at once) of the same mountpoint tree on disk, its output read into the bench's process; the tree is created before and warm in the page cache, its creation not counted. So ours does more (config, manifest, archive) and reads no disk; the baseline makes the layer only. The two alternate run by run (and which goes first), one warm-up each; times are the medians of each side over 31, 21 and 15 pairs. The size rows compare the mountpoint layer's bytes.",
    source: "`bench/src/build-image.ts`",
  },
  {
    title: "Mounts latency vs closure size",
    description:
      "p50 of 200 `Mounts` calls for a container on a nix layer of N store paths (ours, bind or hardlink mode) against a container on a plain overlay chain (baseline, mount mode none), in process, without mounting: the snapshotter's own work per call. Ours does more work by design; the figure shows what it costs.",
    source: "`bench/src/mounts.ts`",
  },
  {
    title: startSection,
    description:
      "`ctr run --rm` of a container running busybox's `true` from an image whose closure is busybox plus synthetic store paths: nix image through the daemon (one containerd 1.7, two daemons as proxy snapshotters, bind and hardlink mode) against the same closure as a one-layer image on containerd's built-in overlayfs snapshotter. The nix image is built from a closure-info path, so it carries `buildImage`'s default annotation form, the closure form (one `nix-closure` label). The time covers creating the container, mounting, starting runc, the exit and the removal. Hardlink and layered starts run interleaved, one of each per round with the order alternating, after one unmeasured start of each (15 rounds by default); bind mode's starts (5 by default) run before them. Each figure is a median; starts follow each other without a pause, so a start also waits for what the previous removal left running in containerd (the collection of the removed snapshot). In bind mode the container's rootfs is an overlay plus one read-only bind mount per store path of the closure; in hardlink mode it is one overlay whose lower layer holds hard links to the store paths' files.",
    source: "`bench/src/container-start.ts`",
  },
  {
    title: registrySection,
    description:
      "Bytes the registry sent (response bodies, counted by a proxy) when containerd 1.6 fetched every blob of the image (`ctr content fetch`): a nix image of redis, whose closure is already in the Nix store, against the same closure as an ordinary one-layer image. Both pushed with skopeo to Debian's docker-registry on 127.0.0.1.",
    source: "`bench/src/registry-bytes.ts`",
  },
  {
    title: cyclesSection,
    description:
      "Cycles per second of Prepare + Mounts + Commit + View + Stat + Remove + Remove through containerd 1.6's Snapshots API: the daemon as the `nix` proxy snapshotter (ours) against containerd's built-in overlayfs snapshotter (baseline), on the same containerd.",
    source: "`bench/src/snapshot-cycles.ts`",
  },
  {
    title: proxyCyclesSection,
    description:
      "Cycles per second of the same cycle over the proxy Snapshots API on a unix socket, no containerd in between: the daemon (ours) against containerd 1.6's own overlay snapshotter served by a small Go program (`snapshots/overlay` + `contrib/snapshotservice`, baseline). Both driven by one Go client using containerd's `snapshots/proxy` on one connection, as containerd dials a proxy plugin; built in the run from Debian's packaged Go sources. Each server first runs 600 untimed cycles at each concurrency (the daemon is long-running, and V8 optimises its code over its first few thousand calls; the warm-up rates are in the run's log). Upper median of 2 rounds (the better one), alternating which server goes first. Where the time goes: [benchmarks/where-the-time-goes.md](benchmarks/where-the-time-goes.md).",
    source: "`bench/src/proxy-cycles.ts`, `bench/src/go-snapshot-cycles/main.go`",
  },
  {
    title: "PullImage of a nix:0 image",
    description:
      "The CRI ImageService's PullImage of a `nix:0` reference whose closure is in the store (ours) against `ctr images import` of the same closure packed as an ordinary layered image (baseline), on the same containerd 1.6 (hardlink mode).",
    source: "`bench/src/pull.ts`",
  },
  {
    title: "nix-registry vs docker-registry",
    description:
      "The on-demand registry (`apps/nix-registry`, the built daemon, a stand-in package set made from the host's busybox) against Debian's `docker-registry` serving the same images pushed in advance, both on 127.0.0.1. Cached manifest: p50 and p99 of 1,000 sequential `GET /v2/hello/busybox/manifests/latest` on one keep-alive connection, alternating blocks of 100. First pull: manifest by tag then every blob, median over five images not served yet; for nix-registry that is the Nix evaluation, the realisation of a closure already in the store (built by an earlier registry to push the same images) and the image generation.",
    source: "`bench/src/registry-latency.ts`",
  },
];

interface PackageBench {
  name: string;
  directory: string;
  entry: string;
  /** The section of each figure the package prints. */
  section(figure: string): string;
  /** Sections this benchmark fills (for the "not measured" rows when it fails). */
  sections: string[];
  /** Environment defaults (a variable already set wins): sizes that fit the 15-minute budget. */
  env?: Record<string, string>;
}

const packageBenches: PackageBench[] = [
  {
    name: "realise",
    directory: "bench",
    entry: "dist/realise.js",
    section: (figure) =>
      figure.startsWith("substitute") ? sections[1]!.title : sections[0]!.title,
    sections: [sections[0]!.title, sections[1]!.title],
    // The per-path loop costs 40-80 ms per path here: 5,000 paths alone would take 4-7 minutes.
    env: { NIX_STORE_BENCH_SIZES: "100,1000" },
  },
  {
    name: "image",
    directory: "bench",
    entry: "dist/build-image.js",
    section: () => sections[2]!.title,
    sections: [sections[2]!.title],
  },
  {
    name: "mounts",
    directory: "bench",
    entry: "dist/mounts.js",
    section: () => sections[3]!.title,
    sections: [sections[3]!.title],
  },
  {
    name: "pull",
    directory: "bench",
    entry: "dist/pull.js",
    section: () => sections[8]!.title,
    sections: [sections[8]!.title],
    env: { BENCH_ITERATIONS: "5" },
  },
  {
    name: "registry-latency",
    directory: "bench",
    entry: "dist/registry-latency.js",
    section: () => sections[9]!.title,
    sections: [sections[9]!.title],
  },
];

const ownBenches = ["start", "registry", "cycles", "proxy"] as const;

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

/** Runs a package's benchmark with `--json`; its output goes to our stderr as it comes. */
function runPackageBench(
  bench: PackageBench,
): Promise<{ figure: string; ours: number; baseline: number; unit: Figure["unit"] }[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bench.entry, "--json"], {
      cwd: join(repositoryRoot, bench.directory),
      env: { ...bench.env, ...process.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      process.stderr.write(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      process.stderr.write(chunk);
    });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const last = stdout
        .trim()
        .split("\n")
        .reverse()
        .find((line) => line.startsWith('{"figures"'));
      if (code !== 0 || last === undefined) {
        const reason =
          stderr.trim().split("\n").at(-1) ?? `exit ${code ?? signal}, no JSON figures printed`;
        reject(new Error(`${bench.name} benchmark failed (exit ${code ?? signal}): ${reason}`));
        return;
      }
      resolve((JSON.parse(last) as { figures: [] }).figures);
    });
  });
}

async function programVersion(program: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(program, args);
    return stdout.trim().split("\n")[0] ?? "?";
  } catch {
    return "not installed";
  }
}

/** The 1, 5 and 15-minute load averages: other work on a shared machine shows in every figure. */
function loadAverages(): string {
  return loadavg()
    .map((value) => value.toFixed(1))
    .join(" / ");
}

async function environment(
  containerdVersions: string[],
  loadAtStart: string,
): Promise<[string, string][]> {
  return [
    ["date", `${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`],
    ["CPU", `${cpus()[0]?.model.trim() ?? "?"}, ${cpus().length} cores`],
    ["memory", `${(totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ["kernel", `Linux ${release()}`],
    ["node", process.version],
    ["nix", await programVersion("nix-store", ["--version"])],
    ["containerd", containerdVersions.join("; ")],
    ["runc", await programVersion("runc", ["--version"])],
    ["load average (1 / 5 / 15 min) at the start", loadAtStart],
    ["load average (1 / 5 / 15 min) at the end", loadAverages()],
  ];
}

const readmeStart = "<!-- bench:start (written by pnpm bench) -->";
const readmeEnd = "<!-- bench:end -->";

async function main(): Promise<void> {
  const started = performance.now();
  const loadAtStart = loadAverages();
  const onlyIndex = process.argv.indexOf("--only");
  const only = onlyIndex >= 0 ? new Set((process.argv[onlyIndex + 1] ?? "").split(",")) : undefined;
  const write = !process.argv.includes("--no-write");
  const wanted = (name: string) => only === undefined || only.has(name);
  if (process.getuid?.() !== 0) log("not root: the benchmarks that need containerd and Nix fail");

  const figures: Figure[] = [];
  const missing: Missing[] = [];
  const containerdVersions = new Set<string>();
  containerdVersions.add(await programVersion("containerd", ["--version"]));
  let points: StartPoint[] = [];

  for (const bench of packageBenches.filter((entry) => wanted(entry.name))) {
    log(`${bench.name}: running ${bench.directory}/${bench.entry} --json`);
    try {
      for (const figure of await runPackageBench(bench)) {
        figures.push({ ...figure, section: bench.section(figure.figure) });
      }
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      log(reason);
      for (const section of bench.sections) missing.push({ section, figure: "all", reason });
    }
  }

  const own: Record<(typeof ownBenches)[number], () => Promise<void>> = {
    start: async () => {
      const sizes = (process.env.BENCH_START_SIZES ?? "10,100,1000,5000")
        .split(",")
        .map(Number)
        .filter((value) => Number.isSafeInteger(value) && value > 0);
      const runs = Number(process.env.BENCH_START_RUNS ?? 15);
      const bindRuns = Number(process.env.BENCH_START_BIND_RUNS ?? 5);
      const result = await benchContainerStart(sizes, runs, bindRuns, log);
      figures.push(...result.figures);
      points = result.points;
      containerdVersions.add(result.containerdVersion);
    },
    registry: async () => {
      figures.push(...(await benchRegistryBytes(log)).figures);
    },
    cycles: async () => {
      figures.push(...(await benchSnapshotCycles(log)).figures);
    },
    proxy: async () => {
      figures.push(...(await benchProxyCycles(log)).figures);
    },
  };
  const ownSections = {
    start: startSection,
    registry: registrySection,
    cycles: cyclesSection,
    proxy: proxyCyclesSection,
  };
  for (const name of ownBenches.filter(wanted)) {
    log(`${name}: running`);
    try {
      await own[name]();
    } catch (error) {
      const reason = error instanceof Error ? error.message.split("\n")[0]! : String(error);
      log(`${name} failed: ${reason}`);
      missing.push({ section: ownSections[name], figure: "all", reason });
    }
  }

  const durationSeconds = (performance.now() - started) / 1000;
  const plot = "benchmarks/start-time.svg";
  const report = {
    sections: sections.filter(
      (section) =>
        figures.some((figure) => figure.section === section.title) ||
        missing.some((entry) => entry.section === section.title),
    ),
    figures,
    missing,
    environment: await environment(
      [...containerdVersions].map((line) =>
        line.replace(/^containerd github.com\/containerd\/containerd /, ""),
      ),
      loadAtStart,
    ),
    durationSeconds,
    command: "pnpm bench",
    ...(points.length > 0 ? { plot } : {}),
  };
  const markdown = renderMarkdown(report);
  process.stdout.write(`${markdown}\n`);
  if (!write) return;
  if (only !== undefined) {
    log("--only: not writing docs/benchmarks.md (a partial run); use --no-write to silence this");
    return;
  }
  await writeFile(join(repositoryRoot, "docs", "benchmarks.md"), markdown);
  if (points.length > 0) {
    await mkdir(join(repositoryRoot, "docs", "benchmarks"), { recursive: true });
    await writeFile(
      join(repositoryRoot, "docs", plot),
      renderStartPlot(
        points,
        `${cpus().length} cores, Linux ${release()}, node ${process.version}`,
      ),
    );
  }
  const readmePath = join(repositoryRoot, "README.md");
  const readme = await readFile(readmePath, "utf8");
  const start = readme.indexOf(readmeStart);
  const end = readme.indexOf(readmeEnd);
  if (start >= 0 && end > start) {
    await writeFile(
      readmePath,
      `${readme.slice(0, start + readmeStart.length)}\n${renderReadmeFigures(report)}\n${readme.slice(end)}`,
    );
    log("README.md: Benchmarks figures updated");
  }
  log(`wrote docs/benchmarks.md in ${durationSeconds.toFixed(0)} s`);
}

main().catch((error: unknown) => {
  log(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});
