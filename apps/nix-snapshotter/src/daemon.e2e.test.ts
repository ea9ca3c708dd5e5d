import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { lstat, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus } from "@nix-snapshotter/api/health/v1";
import {
  type BinaryCache,
  createNixFixtures,
  type NixFixtures,
  nixE2eSkipReason,
  startBinaryCache,
} from "@nix-snapshotter/nix-store/testing";
import { ErrorCode, Kind, SnapshotterError } from "@nix-snapshotter/snapshotter";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  daemonEntry,
  startDaemonProcess,
  testGcRootsParent,
  unixGrpcTransport,
} from "./testing/daemon-process.js";

const isRoot = process.getuid?.() === 0;
// Debian's python3 (system-deps) first: a version manager's shim on PATH (pyenv) takes seconds to
// start on a loaded machine, longer than the receiver is given to bind.
const python = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
const notifyTools =
  spawnSync("sh", ["-c", `command -v systemd-notify && command -v ${python}`]).status === 0;
const nixSkip = nixE2eSkipReason(["nix-store", "nix"]);

function runDaemon(args: string[]): { code: number | null; stderr: string } {
  const result = spawnSync(process.execPath, [daemonEntry, ...args], {
    encoding: "utf8",
    timeout: 30_000,
    env: { ...process.env, NIX_SNAPSHOTTER_LOG_FORMAT: "json" },
  });
  return { code: result.status, stderr: result.stderr };
}

function httpGet(socketPath: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request({ socketPath, path }, (response) => {
      let body = "";
      response.setEncoding("utf8").on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () => resolve(body));
    })
      .on("error", reject)
      .end();
  });
}

/** Symlinks (GC roots) below a directory; none when it does not exist. */
function rootLinks(directory: string): string[] {
  if (!existsSync(directory)) return [];
  const found = spawnSync("find", [directory, "-type", "l"], { encoding: "utf8" });
  return found.stdout.split("\n").filter(Boolean);
}

interface NotifyReceiver {
  /** The socket to put in NOTIFY_SOCKET. */
  socket: string;
  /** Every datagram received so far, one per line. */
  received(): string;
  /** Waits up to 10 s for `text` to have been received; returns everything received. */
  waitFor(text: string): Promise<string>;
}

/**
 * Plays systemd's side of NOTIFY_SOCKET (Node cannot receive unix datagrams): a python3 receiver
 * printing each datagram on one line. With `stopOnReady` it also sends SIGTERM to MAINPID on the
 * READY=1 datagram itself, as a manager stopping a unit the moment it is ready would.
 */
async function startNotifyReceiver(
  cleanups: Array<() => Promise<void>>,
  options: { stopOnReady?: boolean } = {},
): Promise<NotifyReceiver> {
  const directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-notify-"));
  cleanups.push(() => rm(directory, { recursive: true, force: true }));
  const socket = join(directory, "notify.sock");
  const script = [
    "import os,re,signal,socket,sys",
    "s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)",
    "s.bind(sys.argv[1])",
    'print("bound",flush=True)',
    "while True:",
    "    message=s.recv(4096).decode()",
    '    print(message.replace("\\n"," "),flush=True)',
    '    found=re.search(r"MAINPID=(\\d+)",message)',
    '    if sys.argv[2]=="stop" and "READY=1" in message and found:',
    "        os.kill(int(found.group(1)),signal.SIGTERM)",
  ].join("\n");
  const receiver = spawn(
    python,
    ["-u", "-c", script, socket, options.stopOnReady ? "stop" : "print"],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  cleanups.push(async () => {
    receiver.kill();
  });
  let received = "";
  receiver.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    received += chunk;
  });
  const waitFor = async (text: string) => {
    for (let attempt = 0; attempt < 500 && !received.includes(text); attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return received;
  };
  if (!(await waitFor("bound")).includes("bound")) throw new Error("the receiver did not bind");
  return { socket, received: () => received, waitFor };
}

function sample(metrics: string, line: RegExp): number {
  const match = metrics.split("\n").find((candidate) => line.test(candidate));
  return match ? Number(match.split(" ").at(-1)) : 0;
}

describe("daemon command line", () => {
  let directory: string;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-cli-"));
  });
  afterAll(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it("exits 1 naming the key when the config has an unknown key", async () => {
    const config = join(directory, "unknown.toml");
    await writeFile(config, `root = "/tmp/x"\nsnapshotter_root = "/tmp/y"\n`);
    const { code, stderr } = runDaemon(["-c", config]);
    expect(code).toBe(1);
    expect(stderr).toContain(`nix-snapshotter: config ${config}: unknown key "snapshotter_root"`);
  });

  it("exits 1 naming the key when a value is of the wrong type", async () => {
    const config = join(directory, "bad.toml");
    await writeFile(config, `[image_service]\nenable = "false"\n`);
    const { code, stderr } = runDaemon(["--config", config]);
    expect(code).toBe(1);
    expect(stderr).toContain(`"image_service.enable" must be true or false, got string "false"`);
  });

  it("refuses an unknown log level and an unknown flag", () => {
    const level = runDaemon(["-l", "loud", "-c", join(directory, "missing.toml")]);
    expect(level.code).toBe(1);
    expect(level.stderr).toContain('invalid log level "loud"');
    const flag = runDaemon(["--snapshotter-root", "/x"]);
    expect(flag.code).not.toBe(0);
    expect(flag.stderr).toContain("unknown option '--snapshotter-root'");
  });

  it("prints help with the Go daemon's flags", () => {
    const result = spawnSync(process.execPath, [daemonEntry, "--help"], { encoding: "utf8" });
    expect(result.status).toBe(0);
    for (const flag of ["-l, --log-level", "-c, --config", "-a, --address", "--root"]) {
      expect(result.stdout).toContain(flag);
    }
  });
});

describe.skipIf(!isRoot)(`daemon process${isRoot ? "" : " (skipped: needs root)"}`, () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("creates the socket directory 0700 and the socket 0600", async () => {
    const daemon = await startDaemonProcess();
    cleanups.push(daemon.cleanup);
    const directory = await lstat(join(daemon.dir, "run"));
    const socket = await lstat(daemon.address);
    expect(directory.mode & 0o777).toBe(0o700);
    expect(socket.isSocket()).toBe(true);
    expect(socket.mode & 0o777).toBe(0o600);
  });

  it("refuses to start while another daemon answers on the socket", async () => {
    const daemon = await startDaemonProcess();
    cleanups.push(daemon.cleanup);
    const config = join(daemon.dir, "second.toml");
    await writeFile(
      config,
      `address = ${JSON.stringify(daemon.address)}\nroot = ${JSON.stringify(join(daemon.dir, "root2"))}\n[image_service]\nenable = false\n`,
    );
    const { code, stderr } = runDaemon(["-c", config]);
    expect(code).toBe(1);
    expect(stderr).toContain(`another server is listening on ${daemon.address}`);
    // The first daemon still serves.
    await daemon.snapshotter.prepare("still-here", "");
    expect((await daemon.snapshotter.stat("still-here")).kind).toBe(Kind.Active);
  });

  it("replaces a stale socket, and refuses a path that is not a socket", async () => {
    const directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-stale-"));
    cleanups.push(() => rm(directory, { recursive: true, force: true }));
    const stale = join(directory, "stale.sock");
    // A socket file nobody listens on: a process that listened and exited without unlinking.
    spawnSync(process.execPath, [
      "-e",
      "require('node:net').createServer().listen(process.argv[1], () => process.exit(0))",
      stale,
    ]);
    expect((await lstat(stale)).isSocket()).toBe(true);

    const daemon = await startDaemonProcess({ addressFlag: stale });
    cleanups.push(daemon.cleanup);
    const connection = unixGrpcTransport(stale);
    cleanups.push(async () => connection.close());
    const health = createClient(Health, connection.transport);
    expect((await health.check({ service: "" })).status).toBe(
      HealthCheckResponse_ServingStatus.SERVING,
    );

    const regular = join(directory, "regular-file");
    await writeFile(regular, "precious");
    const { code, stderr } = runDaemon([
      "-c",
      daemon.configPath,
      "--address",
      regular,
      "--root",
      join(directory, "root"),
    ]);
    expect(code).toBe(1);
    expect(stderr).toContain(`${regular} exists and is not a socket`);
    expect(await readFile(regular, "utf8")).toBe("precious");
  });

  it("lets flags override the file: --address and --root", async () => {
    const directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-flags-"));
    cleanups.push(() => rm(directory, { recursive: true, force: true }));
    const address = join(directory, "flag.sock");
    const root = join(directory, "flag-root");
    const daemon = await startDaemonProcess({ addressFlag: address, rootFlag: root });
    cleanups.push(daemon.cleanup);
    expect(existsSync(join(root, "metadata.db"))).toBe(true);
    expect(existsSync(join(daemon.dir, "root"))).toBe(false);
    expect(existsSync(join(daemon.dir, "run"))).toBe(false);
    const connection = unixGrpcTransport(address);
    cleanups.push(async () => connection.close());
    const health = createClient(Health, connection.transport);
    expect((await health.check({ service: "" })).status).toBe(1);
  });

  it("stops on SIGTERM and SIGINT with exit 0, removes the socket, and keeps its state", async () => {
    const daemon = await startDaemonProcess();
    cleanups.push(daemon.cleanup);
    await daemon.snapshotter.prepare("layer", "");
    await daemon.snapshotter.commit("base", "layer", { labels: { kept: "yes" } });
    expect(await daemon.stop("SIGTERM")).toEqual({ code: 0, signal: null });
    expect(existsSync(daemon.address)).toBe(false);
    expect(await daemon.log()).toContain('"msg":"stopped"');

    const again = await startDaemonProcess({ rootFlag: daemon.root });
    cleanups.push(again.cleanup);
    expect((await again.snapshotter.stat("base")).labels).toEqual({ kept: "yes" });
    expect(await again.stop("SIGINT")).toEqual({ code: 0, signal: null });
  });

  it("makes an active snapshot's directory again at start when power loss took it", async () => {
    const daemon = await startDaemonProcess();
    cleanups.push(daemon.cleanup);
    await daemon.snapshotter.prepare("layer", "");
    await daemon.snapshotter.commit("base", "layer");
    const [mount] = await daemon.snapshotter.prepare("container", "base");
    const upper = mount!.options.find((option) => option.startsWith("upperdir="))!.slice(9);
    expect(await daemon.stop("SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
    // What a power cut can leave: the row committed and synced, its mkdir never on the disk.
    await rm(join(upper, ".."), { recursive: true });

    const again = await startDaemonProcess({ rootFlag: daemon.root });
    cleanups.push(again.cleanup);
    const [remount] = await again.snapshotter.mounts("container");
    expect(remount!.options).toContain(`upperdir=${upper}`);
    expect((await lstat(upper)).isDirectory()).toBe(true);
    expect((await lstat(join(upper, "..", "work"))).isDirectory()).toBe(true);
    expect(await again.log()).toMatch(/"keys":\["container"\].*made again, empty/);
    await again.snapshotter.remove("container");
    expect(await again.stop("SIGTERM")).toEqual({ code: 0, signal: null });
  });

  it.skipIf(!notifyTools)(
    `tells systemd it is ready through NOTIFY_SOCKET${notifyTools ? "" : " (skipped: needs systemd-notify and python3)"}`,
    async () => {
      const receiver = await startNotifyReceiver(cleanups);
      const daemon = await startDaemonProcess({ env: { NOTIFY_SOCKET: receiver.socket } });
      cleanups.push(daemon.cleanup);
      expect(await receiver.waitFor("READY=1")).toContain("READY=1");
      expect(receiver.received()).toContain(`MAINPID=${daemon.child.pid}`);
      expect(await daemon.stop()).toEqual({ code: 0, signal: null });
      expect(await receiver.waitFor("STOPPING=1")).toContain("STOPPING=1");
    },
  );

  it.skipIf(!notifyTools)(
    `shuts down cleanly on a SIGTERM sent the moment READY=1 arrives${notifyTools ? "" : " (skipped: needs systemd-notify and python3)"}`,
    async () => {
      // systemd may stop a unit as soon as it is ready; READY=1 reaches the manager while the
      // daemon is still finishing its start. This receiver plays the manager and sends SIGTERM
      // to MAINPID on the READY=1 datagram itself, so the signal lands in that window every time.
      const receiver = await startNotifyReceiver(cleanups, { stopOnReady: true });
      const directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-ready-stop-"));
      cleanups.push(() => rm(directory, { recursive: true, force: true }));
      const gcRootsDir = join(testGcRootsParent, `ready-stop-${process.pid}`);
      cleanups.push(() => rm(gcRootsDir, { recursive: true, force: true }));
      const address = join(directory, "run", "daemon.sock");
      const configPath = join(directory, "config.toml");
      await writeFile(
        configPath,
        [
          `address = ${JSON.stringify(address)}`,
          `root = ${JSON.stringify(join(directory, "root"))}`,
          `gc_roots_dir = ${JSON.stringify(gcRootsDir)}`,
          "[image_service]",
          "enable = false",
          "",
        ].join("\n"),
      );
      const child = spawn(process.execPath, [daemonEntry, "-c", configPath], {
        env: { ...process.env, NIX_SNAPSHOTTER_LOG_FORMAT: "json", NOTIFY_SOCKET: receiver.socket },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk;
      });
      const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
        (resolve) => child.once("exit", (code, signal) => resolve({ code, signal })),
      );
      expect(receiver.received()).toContain("READY=1");
      expect(exit, stderr).toEqual({ code: 0, signal: null });
      expect(stderr).toContain('"msg":"stopped"');
      expect(existsSync(address)).toBe(false);
      expect(await receiver.waitFor("STOPPING=1")).toContain("STOPPING=1");
    },
  );

  it("survives garbage, HTTP/1.1 and half-open connections on its socket", async () => {
    const daemon = await startDaemonProcess();
    cleanups.push(daemon.cleanup);
    const send = (payload: string | Uint8Array, endAfter: boolean) =>
      new Promise<string>((resolve) => {
        const socket = connect(daemon.address);
        let answer = "";
        socket.on("data", (chunk: Buffer) => {
          answer += chunk.toString("latin1");
        });
        socket.on("error", () => resolve(answer));
        socket.on("close", () => resolve(answer));
        socket.write(payload, () => {
          if (endAfter) socket.end();
          else setTimeout(() => socket.destroy(), 200);
        });
      });
    await send(new Uint8Array(4096).fill(0xff), true);
    await send("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true);
    // HTTP/2 preface followed by a frame header claiming 16 MiB.
    await send(
      Buffer.concat([
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Buffer.from([0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]),
      ]),
      false,
    );
    await send("PRI * HTTP/2.0\r\n", false);
    await daemon.snapshotter.prepare("after-garbage", "");
    expect((await daemon.snapshotter.stat("after-garbage")).kind).toBe(Kind.Active);
    expect(daemon.child.exitCode).toBeNull();
  });

  it("answers a prepare of a hostile nix layer with InvalidArgument naming the label", async () => {
    const daemon = await startDaemonProcess();
    cleanups.push(daemon.cleanup);
    const error = await daemon.snapshotter
      .prepare("hostile", "", {
        labels: {
          "containerd.io/snapshot/nix-layer": "true",
          "containerd.io/snapshot/nix-store-path.0": "/nix/store/../../etc",
        },
      })
      .catch((caught: unknown) => caught);
    expect(SnapshotterError.is(error, ErrorCode.InvalidArgument)).toBe(true);
    expect((error as Error).message).toContain("nix-store-path.0");
    expect(rootLinks(daemon.gcRootsDir)).toEqual([]);
    const all: string[] = [];
    for await (const info of daemon.snapshotter.list()) all.push(info.name);
    expect(all).toEqual([]);
  });
});

describe.skipIf(!isRoot || nixSkip !== undefined)(
  `daemon with Nix${nixSkip ? ` (skipped: ${nixSkip})` : ""}`,
  () => {
    let fixtures: NixFixtures;
    const caches: BinaryCache[] = [];
    const cleanups: Array<() => Promise<void>> = [];

    beforeAll(async () => {
      fixtures = await createNixFixtures({ label: "daemon-process" });
    });
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });
    afterAll(async () => {
      for (const cache of caches) await cache.close();
      await fixtures?.cleanup();
    });

    /** Store paths present only in a (slow) binary cache: absent from the store. */
    async function pathsOnlyInCache(count: number, latencyMs: number) {
      const closure = await fixtures.syntheticClosure({ count, closureInfo: false });
      const cache = await startBinaryCache({ paths: closure.paths, latencyMs });
      caches.push(cache);
      await closure.release();
      await fixtures.deletePaths(closure.paths);
      const nixConfig = Object.entries(cache.nixOptions)
        .map(([name, value]) => `${name} = ${value}`)
        .join("\n");
      return { paths: closure.paths, cache, env: { NIX_CONFIG: nixConfig } };
    }

    function nixLabels(paths: readonly string[]): Record<string, string> {
      const labels: Record<string, string> = { "containerd.io/snapshot/nix-layer": "true" };
      paths.forEach((path, index) => {
        labels[`containerd.io/snapshot/nix-store-path.${index}`] = path;
      });
      return labels;
    }

    it("finishes an in-flight Prepare on SIGTERM, substituting from the cache, then exits 0", async () => {
      const { paths, env, cache } = await pathsOnlyInCache(3, 400);
      const metricsSocket = join(tmpdir(), `nix-snapshotter-metrics-${process.pid}.sock`);
      const daemon = await startDaemonProcess({
        env,
        extraConfig: `metrics_address = ${JSON.stringify(metricsSocket)}`,
      });
      cleanups.push(daemon.cleanup);
      cleanups.push(() => rm(metricsSocket, { force: true }));

      const prepare = daemon.snapshotter.prepare("nix-layer", "", { labels: nixLabels(paths) });
      // Wait until the call is inside the daemon (logged), then ask it to stop.
      while (!(await daemon.log()).includes('"rpc":"Prepare"')) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const metricsBefore = await httpGet(metricsSocket, "/metrics");
      expect(sample(metricsBefore, /^nix_snapshotter_snapshots\{kind="active"\}/)).toBe(0);
      const stopped = daemon.stop("SIGTERM");
      const mounts = await prepare;
      expect(mounts.length).toBeGreaterThan(0);
      expect(await stopped).toEqual({ code: 0, signal: null });
      for (const path of paths) expect(existsSync(path)).toBe(true);
      expect(cache.requests()).toBeGreaterThan(0);
      expect(await daemon.log()).toContain('"msg":"stopped"');
    });

    it("exposes RPC, realise and snapshot metrics", async () => {
      const { paths, env } = await pathsOnlyInCache(2, 0);
      const directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-metrics-"));
      cleanups.push(() => rm(directory, { recursive: true, force: true }));
      const metricsSocket = join(directory, "metrics.sock");
      const daemon = await startDaemonProcess({
        env,
        extraConfig: `metrics_address = ${JSON.stringify(metricsSocket)}`,
      });
      cleanups.push(daemon.cleanup);
      await daemon.snapshotter.prepare("nix", "", { labels: nixLabels(paths) });
      await daemon.snapshotter.commit("nix-committed", "nix");
      await daemon.snapshotter.view("view", "nix-committed");
      await daemon.snapshotter.stat("missing").catch(() => {});
      for await (const _ of daemon.snapshotter.list()) {
        // drain
      }
      const metrics = await httpGet(metricsSocket, "/metrics");
      const service = "containerd.services.snapshots.v1.Snapshots";
      expect(
        sample(
          metrics,
          new RegExp(
            `^nix_snapshotter_grpc_requests_total\\{service="${service}",method="Prepare",code="OK"\\}`,
          ),
        ),
      ).toBe(1);
      expect(
        sample(metrics, /^nix_snapshotter_grpc_requests_total\{.*method="Stat",code="NotFound"\}/),
      ).toBe(1);
      expect(
        sample(metrics, /^nix_snapshotter_grpc_requests_total\{.*method="List",code="OK"\}/),
      ).toBe(1);
      expect(
        sample(
          metrics,
          /^nix_snapshotter_grpc_request_duration_seconds_count\{.*method="Commit",code="OK"\}/,
        ),
      ).toBe(1);
      expect(
        sample(metrics, /^nix_snapshotter_realise_duration_seconds_count\{result="ok"\}/),
      ).toBe(1);
      expect(sample(metrics, /^nix_snapshotter_paths_substituted_total /)).toBe(2);
      expect(sample(metrics, /^nix_snapshotter_snapshots\{kind="committed"\}/)).toBe(1);
      expect(sample(metrics, /^nix_snapshotter_snapshots\{kind="view"\}/)).toBe(1);
      expect(sample(metrics, /^nix_snapshotter_snapshots\{kind="active"\}/)).toBe(0);
    });

    it("creates the configured GC roots directory for the snapshot's closure and removes it with the snapshot", async () => {
      const closure = await fixtures.syntheticClosure({ count: 2, closureInfo: false });
      const daemon = await startDaemonProcess();
      cleanups.push(daemon.cleanup);
      await daemon.snapshotter.prepare("k", "", { labels: nixLabels(closure.paths) });
      expect(rootLinks(daemon.gcRootsDir).length).toBe(closure.paths.length);
      await daemon.snapshotter.remove("k");
      expect(rootLinks(daemon.gcRootsDir)).toEqual([]);
    });
  },
);
