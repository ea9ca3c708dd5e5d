/**
 * kill -9 stress of the snapshotter with real Nix: a worker process runs Prepare (nix and plain
 * layers), Commit and Remove on several lanes with Cleanup in a loop beside them, printing every
 * call it started and every call that was acknowledged; this process deletes and re-adds the
 * store paths the layers use (`nix-store --delete`, the collector's own liveness check, and
 * `nix-store --add`) while it runs, then kills it with SIGKILL at a random instant. After each
 * kill it reopens the root, runs Cleanup and checks: no acknowledged snapshot lost or changed,
 * nothing unexplained, directories exactly the snapshots', GC roots exactly those of the nix
 * layers (no hidden leftovers), `PRAGMA integrity_check` ok, every store path of a live snapshot
 * still valid, and no Nix process of the killed worker left running. Prints the counts.
 *
 *   pnpm --filter @nix-snapshotter/snapshotter stress [--rounds 30] [--lanes 4] [--pool 12]
 *
 * Needs root (roots go under Nix's gcroots) and `nix-store` on PATH. Not part of the test run.
 */
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { createGcRoots, createNixStore } from "@nix-snapshotter/nix-store";
import { type LogEntry, recordingLogger } from "@nix-snapshotter/nix-store/testing";
import { SnapshotterError } from "../errors.js";
import { nixLayerLabel, nixStorePathLabelPrefix } from "../nix-labels.js";
import { nixStorePortFrom } from "../nix-store-adapter.js";
import { createSnapshotter } from "../snapshotter.js";
import { MetadataStore } from "../storage/metastore.js";
import { Kind } from "../types.js";

const run = promisify(execFile);
const ownerPrefix = "stress-";

interface Entry {
  kind: Kind;
  parent: string;
  paths: string[];
}

/** A line the worker prints: a call started, acknowledged, or refused. */
type Event =
  | { type: "ready" }
  | { type: "start"; op: "prepare" | "commit" | "remove"; key: string; name?: string }
  | { type: "ack"; op: "prepare"; key: string; parent: string; paths: string[] }
  | { type: "ack"; op: "commit"; key: string; name: string }
  | { type: "ack"; op: "remove"; key: string }
  | { type: "ack"; op: "cleanup" }
  | { type: "refused"; op: string; key: string; code: string; message: string };

function labelsOf(paths: readonly string[]): Record<string, string> {
  if (paths.length === 0) return {};
  return {
    [nixLayerLabel]: "true",
    ...Object.fromEntries(paths.map((path, index) => [`${nixStorePathLabelPrefix}${index}`, path])),
  };
}

// ---------------------------------------------------------------------------------------------
// The worker (a child process; killed at random).

async function worker(configPath: string): Promise<void> {
  const config = JSON.parse(await readFile(configPath, "utf8")) as {
    root: string;
    gcRootsDir: string;
    pool: string[];
    lanes: number;
    round: number;
    model: Record<string, Entry>;
  };
  const print = (event: Event) => process.stdout.write(`${JSON.stringify(event)}\n`);
  // No substituter: a path the collector deleted fails at once (NotFound) instead of waiting
  // for a binary cache this machine cannot reach.
  const nixStore = createNixStore({
    gcRootsDir: config.gcRootsDir,
    nixOptions: { substituters: "" },
  });
  const s = await createSnapshotter({
    root: config.root,
    mountMode: "bind",
    nixStore: nixStorePortFrom(nixStore),
    gcRootOwnerPrefix: ownerPrefix,
  });
  // Which snapshots may be removed (no children) and built on (committed), as known here.
  const children = new Map<string, number>();
  const committed: string[] = [];
  const leaves = new Set<string>();
  for (const [key, entry] of Object.entries(config.model)) {
    if (entry.parent !== "") children.set(entry.parent, (children.get(entry.parent) ?? 0) + 1);
    if (entry.kind === Kind.Committed) committed.push(key);
  }
  for (const key of Object.keys(config.model)) if (!children.has(key)) leaves.add(key);
  const pick = <T>(items: readonly T[]): T | undefined =>
    items.length === 0 ? undefined : items[Math.floor(Math.random() * items.length)];
  const refused = (op: string, key: string, error: unknown) => {
    const code = SnapshotterError.is(error) ? error.code : "not a SnapshotterError";
    print({
      type: "refused",
      op,
      key,
      code,
      message: String((error as Error).message).slice(0, 300),
    });
  };
  print({ type: "ready" });

  let counter = 0;
  const lane = async (index: number) => {
    for (;;) {
      const choice = Math.random();
      const key = `r${config.round}-l${index}-${counter++}`;
      if (choice < 0.45) {
        // A nix layer (or, one time in four, a plain one), committed right after.
        const paths =
          Math.random() < 0.25
            ? []
            : [
                ...new Set(
                  Array.from(
                    { length: 1 + Math.floor(Math.random() * 3) },
                    () => pick(config.pool)!,
                  ),
                ),
              ];
        print({ type: "start", op: "prepare", key });
        try {
          await s.prepare(key, "", { labels: labelsOf(paths) });
        } catch (error) {
          refused("prepare", key, error);
          continue;
        }
        print({ type: "ack", op: "prepare", key, parent: "", paths });
        const name = `${key}-c`;
        print({ type: "start", op: "commit", key, name });
        try {
          await s.commit(name, key);
        } catch (error) {
          refused("commit", key, error);
          leaves.add(key);
          continue;
        }
        print({ type: "ack", op: "commit", key, name });
        committed.push(name);
        leaves.add(name);
      } else if (choice < 0.75) {
        // A container on a committed layer.
        const parent = pick(committed);
        if (parent === undefined) continue;
        print({ type: "start", op: "prepare", key });
        try {
          await s.prepare(key, parent);
        } catch (error) {
          refused("prepare", key, error);
          continue;
        }
        children.set(parent, (children.get(parent) ?? 0) + 1);
        leaves.delete(parent);
        leaves.add(key);
        print({ type: "ack", op: "prepare", key, parent, paths: [] });
      } else {
        const victim = pick([...leaves]);
        if (victim === undefined) continue;
        leaves.delete(victim);
        const index = committed.indexOf(victim);
        if (index !== -1) committed.splice(index, 1);
        print({ type: "start", op: "remove", key: victim });
        try {
          await s.remove(victim);
        } catch (error) {
          refused("remove", victim, error);
          continue;
        }
        print({ type: "ack", op: "remove", key: victim });
      }
    }
  };
  const cleaner = async () => {
    for (;;) {
      await s.cleanup();
      print({ type: "ack", op: "cleanup" });
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };
  await Promise.all([
    ...Array.from({ length: config.lanes }, (_, index) => lane(index)),
    cleaner(),
  ]);
}

// ---------------------------------------------------------------------------------------------
// The driver.

interface Counts {
  rounds: number;
  kills: number;
  acknowledged: Record<string, number>;
  refused: Record<string, number>;
  uncertainAtKill: number;
  /** Processes the worker had started (Nix, flock) when it was killed. */
  childProcessesAtKill: number;
  gcDeleted: number;
  gcRefusedLive: number;
  readded: number;
  findings: Record<string, number>;
  examples: string[];
}

async function processAlive(pid: number): Promise<boolean> {
  const text = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return text !== "" && text.slice(text.lastIndexOf(")") + 2).charAt(0) !== "Z";
}

async function descendants(pid: number): Promise<number[]> {
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    const { stdout } = await run("pgrep", ["-P", String(parent)]).catch(() => ({ stdout: "" }));
    for (const line of stdout.split("\n")) {
      if (line === "") continue;
      found.push(Number(line));
      queue.push(Number(line));
    }
  }
  return found;
}

async function driver(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string", default: "30" },
      lanes: { type: "string", default: "4" },
      pool: { type: "string", default: "12" },
      "min-ms": { type: "string", default: "300" },
      "max-ms": { type: "string", default: "2500" },
    },
  });
  const rounds = Number(values.rounds);
  const lanes = Number(values.lanes);
  const poolSize = Number(values.pool);
  const minMs = Number(values["min-ms"]);
  const maxMs = Number(values["max-ms"]);
  if (process.getuid?.() !== 0) throw new Error("run as root: GC roots go under Nix's gcroots");
  const started = Date.now();
  const runId = randomBytes(4).toString("hex");
  const directory = await mkdtemp(join(tmpdir(), "snapshotter-kill-stress-"));
  const gcRootsDir = `/nix/var/nix/gcroots/nix-snapshotter-stress-${runId}`;
  const root = join(directory, "root");
  const counts: Counts = {
    rounds: 0,
    kills: 0,
    acknowledged: {},
    refused: {},
    uncertainAtKill: 0,
    childProcessesAtKill: 0,
    gcDeleted: 0,
    gcRefusedLive: 0,
    readded: 0,
    findings: {},
    examples: [],
  };
  const finding = (kind: string, detail: string) => {
    counts.findings[kind] = (counts.findings[kind] ?? 0) + 1;
    if (counts.examples.length < 20) counts.examples.push(`${kind}: ${detail}`);
  };
  try {
    // The pool: small store paths of this run, nothing else roots them.
    const poolFiles = join(directory, "pool");
    await mkdir(poolFiles);
    const addPath = async (index: number) => {
      const file = join(poolFiles, `stress-${runId}-${index}`);
      await writeFile(file, `kill stress ${runId} ${index}\n`);
      const { stdout } = await run("nix-store", ["--add", file]);
      return stdout.trim();
    };
    const pool: string[] = [];
    for (let index = 0; index < poolSize; index++) pool.push(await addPath(index));
    for (const kind of [
      "lost",
      "changed",
      "unexplained",
      "orphanedDirectory",
      "missingDirectory",
      "rootsMismatch",
      "rootLeftover",
      "integrity",
      "collectedWhileLive",
      "orphanedNixProcess",
    ]) {
      counts.findings[kind] = 0;
    }

    const model = new Map<string, Entry>();
    for (let round = 0; round < rounds; round++) {
      counts.rounds++;
      const configPath = join(directory, "config.json");
      await writeFile(
        configPath,
        JSON.stringify({ root, gcRootsDir, pool, lanes, round, model: Object.fromEntries(model) }),
      );
      const child = spawn(
        process.execPath,
        [fileURLToPath(import.meta.url), "worker", configPath],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
        if (stderr.length > 20_000) stderr = stderr.slice(-10_000);
      });
      /** Calls started and not acknowledged yet, by key. */
      const uncertain = new Map<string, Event & { type: "start" }>();
      let ready!: () => void;
      const isReady = new Promise<void>((resolve) => {
        ready = resolve;
      });
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      const lines = createInterface({ input: child.stdout });
      lines.on("line", (line) => {
        let event: Event;
        try {
          event = JSON.parse(line) as Event;
        } catch {
          return;
        }
        if (event.type === "ready") ready();
        else if (event.type === "start") uncertain.set(event.key, event);
        else if (event.type === "refused") {
          uncertain.delete(event.key);
          const name = `${event.op}:${event.code}`;
          counts.refused[name] = (counts.refused[name] ?? 0) + 1;
        } else if (event.type === "ack") {
          counts.acknowledged[event.op] = (counts.acknowledged[event.op] ?? 0) + 1;
          if (event.op === "cleanup") return;
          uncertain.delete(event.key);
          if (event.op === "prepare") {
            model.set(event.key, { kind: Kind.Active, parent: event.parent, paths: event.paths });
          } else if (event.op === "commit") {
            const entry = model.get(event.key);
            model.delete(event.key);
            if (entry !== undefined) model.set(event.name, { ...entry, kind: Kind.Committed });
          } else {
            model.delete(event.key);
          }
        }
      });
      await Promise.race([isReady, exited]);
      if (child.exitCode !== null) throw new Error(`worker exited: ${stderr}`);

      // Nix's collector beside the worker, and paths coming back.
      let running = true;
      const collector = (async () => {
        while (running) {
          const path = pool[Math.floor(Math.random() * pool.length)]!;
          try {
            await run("nix-store", ["--delete", path]);
            counts.gcDeleted++;
          } catch {
            counts.gcRefusedLive++;
          }
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })();
      const readder = (async () => {
        while (running) {
          const index = Math.floor(Math.random() * pool.length);
          const valid = await run("nix-store", ["--check-validity", pool[index]!]).then(
            () => true,
            () => false,
          );
          if (!valid) {
            await addPath(index);
            counts.readded++;
          }
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      })();

      await new Promise((resolve) => setTimeout(resolve, minMs + Math.random() * (maxMs - minMs)));
      const nixProcesses = await descendants(child.pid!);
      counts.childProcessesAtKill += nixProcesses.length;
      child.kill("SIGKILL");
      await exited;
      counts.kills++;
      running = false;
      await Promise.all([collector, readder]);
      counts.uncertainAtKill += uncertain.size;

      // Nothing the worker started survives it.
      for (const pid of nixProcesses) {
        let alive = true;
        for (let index = 0; index < 200 && alive; index++) {
          alive = await processAlive(pid);
          if (alive) await new Promise((resolve) => setTimeout(resolve, 25));
        }
        if (alive) {
          finding("orphanedNixProcess", `pid ${pid}`);
          process.kill(pid, "SIGKILL");
        }
      }

      // Restart, Cleanup, and check.
      const nixStore = createNixStore({ gcRootsDir });
      // A row without its directory is made again (or reported) at start; a kill must never
      // leave one, so what the start says of one is a finding too.
      const startLog: LogEntry[] = [];
      const s = await createSnapshotter({
        root,
        mountMode: "bind",
        nixStore: nixStorePortFrom(nixStore),
        gcRootOwnerPrefix: ownerPrefix,
        logger: recordingLogger(startLog),
      });
      for (const { object, message } of startLog) {
        if (message?.includes("without their directory")) {
          finding("missingDirectory", `${object.count} at start: ${JSON.stringify(object.keys)}`);
        }
      }
      await s.cleanup();
      const actual = new Map<string, { kind: Kind; parent: string }>();
      for await (const info of s.list())
        actual.set(info.name, { kind: info.kind, parent: info.parent });
      await s.close();
      const store = new MetadataStore(join(root, "metadata.db"));
      let records: ReturnType<MetadataStore["all"]>;
      try {
        for (const problem of store.check()) finding("integrity", problem);
        records = store.all();
      } finally {
        store.close();
      }
      const recordOf = new Map(records.map((record) => [record.key, record]));
      const explained = (key: string) => {
        for (const event of uncertain.values()) {
          if (event.key === key || event.name === key) return true;
        }
        return false;
      };
      for (const [key, entry] of model) {
        const found = actual.get(key);
        if (found === undefined) {
          // An unacknowledged Commit of it may have renamed it.
          const commit = uncertain.get(key);
          if (commit?.op === "commit" && commit.name !== undefined && actual.has(commit.name))
            continue;
          if (commit?.op === "remove") continue;
          finding("lost", key);
          continue;
        }
        const record = recordOf.get(key)!;
        if (
          found.kind !== entry.kind ||
          found.parent !== entry.parent ||
          JSON.stringify([...record.nixPaths].sort()) !== JSON.stringify([...entry.paths].sort())
        ) {
          finding(
            "changed",
            `${key}: ${JSON.stringify(found)} ${JSON.stringify(record.nixPaths)} vs ${JSON.stringify(entry)}`,
          );
        }
      }
      for (const key of actual.keys()) {
        if (!model.has(key) && !explained(key)) finding("unexplained", key);
      }
      // Adopt the outcome of the calls the kill interrupted.
      for (const event of uncertain.values()) {
        if (event.op === "prepare") {
          const record = recordOf.get(event.key);
          if (record !== undefined) {
            model.set(event.key, {
              kind: record.kind,
              parent: record.parentKey,
              paths: record.nixPaths,
            });
          }
        } else if (event.op === "commit" && event.name !== undefined && recordOf.has(event.name)) {
          const entry = model.get(event.key);
          model.delete(event.key);
          if (entry !== undefined) model.set(event.name, { ...entry, kind: Kind.Committed });
        } else if (event.op === "remove" && !recordOf.has(event.key)) {
          model.delete(event.key);
        }
      }

      const directories = new Set(await readdir(join(root, "snapshots")));
      for (const record of records) {
        const present = directories.delete(String(record.id));
        const fs = present
          ? await stat(join(root, "snapshots", String(record.id), "fs")).catch(() => undefined)
          : undefined;
        if (fs === undefined) finding("missingDirectory", `${record.key} (${record.id})`);
      }
      for (const name of directories) finding("orphanedDirectory", name);

      const gcRoots = createGcRoots(gcRootsDir);
      for (const leftover of await gcRoots.leftovers()) finding("rootLeftover", leftover.name);
      const expectedOwners = records
        .filter((record) => record.nixPaths.length > 0)
        .map((record) => `${ownerPrefix}${record.id}`)
        .sort();
      const owners = await gcRoots.owners();
      if (JSON.stringify(owners) !== JSON.stringify(expectedOwners)) {
        finding("rootsMismatch", `${owners.length} owners, ${expectedOwners.length} nix layers`);
      }
      const livePaths = [...new Set(records.flatMap((record) => record.nixPaths))];
      if (livePaths.length > 0) {
        const { stdout } = await run("nix-store", [
          "--check-validity",
          "--print-invalid",
          ...livePaths,
        ]);
        for (const path of stdout.split("\n").filter((line) => line !== "")) {
          finding("collectedWhileLive", path);
        }
      }
      process.stdout.write(
        `round ${round + 1}/${rounds}: ${records.length} snapshots, ${uncertain.size} calls cut by the kill, findings ${Object.values(counts.findings).reduce((a, b) => a + b, 0)}\n`,
      );
    }
  } finally {
    await rm(gcRootsDir, { recursive: true, force: true });
    await rm(directory, { recursive: true, force: true });
  }
  const seconds = Math.round((Date.now() - started) / 1000);
  process.stdout.write(`${JSON.stringify({ ...counts, seconds }, null, 2)}\n`);
  const total = Object.values(counts.findings).reduce((a, b) => a + b, 0);
  if (total > 0) process.exitCode = 1;
}

if (process.argv[2] === "worker") {
  await worker(process.argv[3]!);
} else {
  await driver();
}
