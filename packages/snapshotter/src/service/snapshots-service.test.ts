import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus } from "@nix-snapshotter/api/health/v1";
import { InfoSchema, Kind as KindMessage, Snapshots } from "@nix-snapshotter/api/snapshots/v1";
import { errorCodes } from "@nix-snapshotter/errdefs";
import type { Logger } from "@nix-snapshotter/nix-store";
import { describe, expect, it } from "vitest";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { type Info, Kind, type Mount, type Snapshotter, type Usage } from "../types.js";
import { createHealthService } from "./health-service.js";
import { createRemoteSnapshotter } from "./remote-snapshotter.js";
import { createSnapshotsService } from "./snapshots-service.js";

/**
 * A small in-memory Snapshotter: enough containerd semantics to check that the adapter passes
 * each call through once and converts what comes back. The real semantics are tested by the
 * conformance suite against the real snapshotter.
 */
function createMemorySnapshotter(): Snapshotter & { calls: string[] } {
  const snapshots = new Map<string, Info>();
  const calls: string[] = [];
  const clock = { now: Date.UTC(2024, 0, 2, 3, 4, 5, 678) };
  const get = (key: string) => {
    const info = snapshots.get(key);
    if (!info) throw new SnapshotterError(ErrorCode.NotFound, `snapshot "${key}" not found`);
    return info;
  };
  const mountsOf = (key: string): Mount[] => [
    { type: "bind", source: `/snapshots/${key}`, options: ["rbind", "rw"] },
    { type: "bind", source: "/nix/store/x", target: "/nix/store/x", options: ["ro", "rbind"] },
  ];
  const create = (kind: Kind, key: string, parent: string, labels: Record<string, string>) => {
    if (snapshots.has(key)) {
      throw new SnapshotterError(ErrorCode.AlreadyExists, `snapshot "${key}" already exists`);
    }
    if (parent) get(parent);
    const now = new Date(clock.now++);
    snapshots.set(key, { kind, name: key, parent, labels, created: now, updated: now });
    return mountsOf(key);
  };
  return {
    calls,
    async stat(key) {
      calls.push(`stat ${key}`);
      return get(key);
    },
    async update(info, fieldPaths = []) {
      calls.push(`update ${info.name} ${fieldPaths.join(",")}`);
      const current = get(info.name);
      if (fieldPaths.some((path) => path !== "labels" && !path.startsWith("labels."))) {
        throw new SnapshotterError(ErrorCode.InvalidArgument, `cannot update ${fieldPaths}`);
      }
      const updated = { ...current, labels: { ...info.labels }, updated: new Date(clock.now++) };
      snapshots.set(info.name, updated);
      return updated;
    },
    async usage(key): Promise<Usage> {
      calls.push(`usage ${key}`);
      get(key);
      return { size: 2 ** 40 + 3, inodes: 7 };
    },
    async mounts(key) {
      calls.push(`mounts ${key}`);
      get(key);
      return mountsOf(key);
    },
    async prepare(key, parent, options = {}) {
      calls.push(`prepare ${key} ${parent}`);
      return create(Kind.Active, key, parent, options.labels ?? {});
    },
    async view(key, parent, options = {}) {
      calls.push(`view ${key} ${parent}`);
      return create(Kind.View, key, parent, options.labels ?? {});
    },
    async commit(name, key, options = {}) {
      calls.push(`commit ${name} ${key}`);
      const active = get(key);
      if (active.kind !== Kind.Active) {
        throw new SnapshotterError(ErrorCode.FailedPrecondition, `snapshot "${key}" is not active`);
      }
      snapshots.delete(key);
      create(Kind.Committed, name, active.parent, options.labels ?? active.labels);
    },
    async remove(key) {
      calls.push(`remove ${key}`);
      get(key);
      snapshots.delete(key);
    },
    async walk(fn) {
      for (const info of snapshots.values()) await fn(info);
    },
    async *list(filters = []) {
      calls.push(`list ${filters.join("|")}`);
      for (const info of snapshots.values()) {
        if (filters.length === 0 || filters.some((filter) => filter === `kind==${info.kind}`)) {
          yield info;
        }
      }
    },
    async cleanup() {
      calls.push("cleanup");
      throw new Error("disk on fire");
    },
    async close() {},
  };
}

function setup(listBatchSize?: number) {
  const snapshotter = createMemorySnapshotter();
  const health = createHealthService(["containerd.services.snapshots.v1.Snapshots"]);
  const transport = createRouterTransport((router) => {
    router.service(
      Snapshots,
      createSnapshotsService(snapshotter, listBatchSize ? { listBatchSize } : {}),
    );
    router.service(Health, health.impl);
  });
  return {
    snapshotter,
    health,
    remote: createRemoteSnapshotter(transport),
    client: createClient(Snapshots, transport),
    healthClient: createClient(Health, transport),
  };
}

async function codeOf(promise: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await promise;
    return "ok";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

describe("createSnapshotsService", () => {
  it("passes Prepare, Commit, View and Mounts through once each and converts mounts", async () => {
    const { client, snapshotter } = setup();
    const prepared = await client.prepare({
      key: "ns/1/extract",
      parent: "",
      labels: { "containerd.io/snapshot.ref": "sha256:abc" },
    });
    expect(
      prepared.mounts.map((mount) => [mount.type, mount.source, mount.target, mount.options]),
    ).toEqual([
      ["bind", "/snapshots/ns/1/extract", "", ["rbind", "rw"]],
      ["bind", "/nix/store/x", "/nix/store/x", ["ro", "rbind"]],
    ]);
    await client.commit({ name: "ns/2/sha256:abc", key: "ns/1/extract", labels: { a: "b" } });
    const viewed = await client.view({ key: "ns/3/view", parent: "ns/2/sha256:abc" });
    expect(viewed.mounts).toHaveLength(2);
    const mounts = await client.mounts({ key: "ns/3/view" });
    expect(mounts.mounts[0]?.source).toBe("/snapshots/ns/3/view");
    expect(snapshotter.calls).toEqual([
      "prepare ns/1/extract ",
      "commit ns/2/sha256:abc ns/1/extract",
      "view ns/3/view ns/2/sha256:abc",
      "mounts ns/3/view",
    ]);
  });

  it("converts Info with kind, parent, labels and timestamps to the millisecond", async () => {
    const { client } = setup();
    await client.prepare({ key: "a", parent: "" });
    await client.commit({ name: "base", key: "a", labels: { "x.y": "1" } });
    await client.view({ key: "v", parent: "base" });
    const base = (await client.stat({ key: "base" })).info!;
    expect(base.kind).toBe(KindMessage.COMMITTED);
    expect(base.labels).toEqual({ "x.y": "1" });
    expect(timestampDate(base.createdAt!).toISOString()).toBe("2024-01-02T03:04:05.679Z");
    const view = (await client.stat({ key: "v" })).info!;
    expect(view).toMatchObject({ name: "v", parent: "base", kind: KindMessage.VIEW });
  });

  it("maps snapshotter error codes to the same gRPC codes with their message", async () => {
    const { client } = setup();
    await expect(client.stat({ key: "missing" })).rejects.toMatchObject({
      code: Code.NotFound,
      rawMessage: 'snapshot "missing" not found',
    });
    await client.prepare({ key: "k", parent: "" });
    expect(await codeOf(client.prepare({ key: "k", parent: "" }))).toBe(Code.AlreadyExists);
    expect(await codeOf(client.prepare({ key: "k2", parent: "nope" }))).toBe(Code.NotFound);
    await client.view({ key: "v", parent: "" });
    expect(await codeOf(client.commit({ name: "n", key: "v" }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(client.remove({ key: "nope" }))).toBe(Code.NotFound);
  });

  it("answers Internal, never OK, when the snapshotter throws a plain error", async () => {
    const { client } = setup();
    await expect(client.cleanup({})).rejects.toMatchObject({
      code: Code.Internal,
      rawMessage: "disk on fire",
    });
  });

  it("passes the Update mask and Info, and refuses an update without info", async () => {
    const { client, snapshotter } = setup();
    await client.prepare({ key: "k", parent: "" });
    const updated = await client.update({
      info: create(InfoSchema, { name: "k", labels: { new: "label" } }),
      updateMask: create(FieldMaskSchema, { paths: ["labels.new"] }),
    });
    expect(updated.info?.labels).toEqual({ new: "label" });
    expect(snapshotter.calls).toContain("update k labels.new");
    expect(
      await codeOf(
        client.update({
          info: create(InfoSchema, { name: "k" }),
          updateMask: create(FieldMaskSchema, { paths: ["parent"] }),
        }),
      ),
    ).toBe(Code.InvalidArgument);
    expect(await codeOf(client.update({}))).toBe(Code.InvalidArgument);
  });

  it("returns Usage as int64 without losing precision above 2^32", async () => {
    const { client } = setup();
    await client.prepare({ key: "k", parent: "" });
    const usage = await client.usage({ key: "k" });
    expect(usage.size).toBe(2n ** 40n + 3n);
    expect(usage.inodes).toBe(7n);
  });

  it("streams List in batches and passes filters", async () => {
    const { client, snapshotter } = setup(3);
    for (let index = 0; index < 7; index++) await client.prepare({ key: `k${index}`, parent: "" });
    await client.view({ key: "view", parent: "" });
    const sizes: number[] = [];
    const names: string[] = [];
    for await (const response of client.list({})) {
      sizes.push(response.info.length);
      names.push(...response.info.map((info) => info.name));
    }
    expect(sizes).toEqual([3, 3, 2]);
    expect(names).toHaveLength(8);
    const views: string[] = [];
    for await (const response of client.list({ filters: ["kind==view"] })) {
      views.push(...response.info.map((info) => info.name));
    }
    expect(views).toEqual(["view"]);
    expect(snapshotter.calls).toContain("list kind==view");
  });

  it("sends no message at all for an empty List", async () => {
    const { client } = setup();
    const responses = [];
    for await (const response of client.list({})) responses.push(response);
    expect(responses).toEqual([]);
  });
});

describe("createHealthService", () => {
  it("answers Check, NotFound for unknown services, and Watch follows status changes", async () => {
    const { health, healthClient } = setup();
    expect((await healthClient.check({ service: "" })).status).toBe(
      HealthCheckResponse_ServingStatus.SERVING,
    );
    expect(
      (await healthClient.check({ service: "containerd.services.snapshots.v1.Snapshots" })).status,
    ).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect(await codeOf(healthClient.check({ service: "nope" }))).toBe(Code.NotFound);
    const listed = await healthClient.list({});
    expect(Object.keys(listed.statuses).sort()).toEqual([
      "",
      "containerd.services.snapshots.v1.Snapshots",
    ]);

    const seen: HealthCheckResponse_ServingStatus[] = [];
    const stream = healthClient.watch({ service: "" });
    const iterator = stream[Symbol.asyncIterator]();
    seen.push((await iterator.next()).value.status);
    health.shutdown();
    for (;;) {
      const next = await iterator.next();
      if (next.done) break;
      seen.push(next.value.status);
    }
    expect(seen).toEqual([
      HealthCheckResponse_ServingStatus.SERVING,
      HealthCheckResponse_ServingStatus.NOT_SERVING,
    ]);
  });
});

describe("createRemoteSnapshotter", () => {
  it("round-trips every call and turns gRPC codes back into SnapshotterError codes", async () => {
    const { remote } = setup(2);
    const mounts = await remote.prepare("a", "", { labels: { l: "1" } });
    expect(mounts).toEqual([
      { type: "bind", source: "/snapshots/a", options: ["rbind", "rw"] },
      { type: "bind", source: "/nix/store/x", target: "/nix/store/x", options: ["ro", "rbind"] },
    ]);
    await remote.commit("base", "a", { labels: { l: "2" } });
    await remote.view("v", "base");
    const info = await remote.stat("base");
    expect(info).toMatchObject({ kind: Kind.Committed, name: "base", labels: { l: "2" } });
    expect(info.created).toBeInstanceOf(Date);
    expect((await remote.update({ ...info, labels: { m: "3" } }, ["labels"])).labels).toEqual({
      m: "3",
    });
    expect(await remote.usage("v")).toEqual({ size: 2 ** 40 + 3, inodes: 7 });
    expect((await remote.mounts("v"))[0]?.source).toBe("/snapshots/v");
    const names: string[] = [];
    for await (const item of remote.list()) names.push(item.name);
    expect(names.sort()).toEqual(["base", "v"]);
    const walked: string[] = [];
    await remote.walk(
      (item) => {
        walked.push(item.name);
      },
      ["kind==view"],
    );
    expect(walked).toEqual(["v"]);
    await remote.remove("v");

    const error = await remote.stat("v").catch((caught: unknown) => caught);
    expect(SnapshotterError.is(error, ErrorCode.NotFound)).toBe(true);
    expect((error as Error).message).toBe('snapshot "v" not found');
    expect(
      SnapshotterError.is(
        await remote.cleanup().catch((caught: unknown) => caught),
        ErrorCode.Internal,
      ),
    ).toBe(true);
  });

  it("carries every code to a gRPC status and back to the same SnapshotterError code", async () => {
    const failing: Snapshotter = {
      ...createMemorySnapshotter(),
      async stat(key) {
        throw new SnapshotterError(key as ErrorCode, `snapshot "${key}" refused`);
      },
    };
    const transport = createRouterTransport((router) => {
      router.service(Snapshots, createSnapshotsService(failing));
    });
    const client = createClient(Snapshots, transport);
    const remote = createRemoteSnapshotter(transport);
    for (const code of errorCodes) {
      const status = await client.stat({ snapshotter: "nix", key: code }).catch(ConnectError.from);
      expect(status).toBeInstanceOf(ConnectError);
      expect(Code[(status as ConnectError).code]).toBe(code);
      expect((status as ConnectError).rawMessage).toBe(`snapshot "${code}" refused`);
      const error = await remote.stat(code).catch((caught: unknown) => caught);
      expect(SnapshotterError.is(error, code), String(error)).toBe(true);
      expect((error as Error).message).toBe(`snapshot "${code}" refused`);
    }
  });
});

describe("cancellation", () => {
  /**
   * A snapshotter whose prepare, view and commit wait until their signal aborts (and fail as the
   * real one does, Canceled), recording each signal they were given.
   */
  function setupWaiting() {
    const signals: Array<AbortSignal | undefined> = [];
    const entered: string[] = [];
    const wait = (rpc: string, signal: AbortSignal | undefined) => {
      signals.push(signal);
      entered.push(rpc);
      return new Promise<never>((_, reject) => {
        const fail = () =>
          reject(new SnapshotterError(ErrorCode.Canceled, `${rpc} canceled`, { cause: signal }));
        if (signal?.aborted) fail();
        signal?.addEventListener("abort", fail, { once: true });
      });
    };
    const snapshotter: Snapshotter = {
      ...createMemorySnapshotter(),
      prepare: (_key, _parent, options = {}) => wait("prepare", options.signal),
      view: (_key, _parent, options = {}) => wait("view", options.signal),
      commit: (_name, _key, options = {}) => wait("commit", options.signal),
    };
    const transport = createRouterTransport((router) => {
      router.service(Snapshots, createSnapshotsService(snapshotter));
    });
    return { signals, entered, transport };
  }

  async function untilEntered(entered: string[], count: number) {
    while (entered.length < count) await new Promise((resolve) => setImmediate(resolve));
  }

  it("passes each waiting call's signal, aborted when the client cancels", async () => {
    const { signals, entered, transport } = setupWaiting();
    const client = createClient(Snapshots, transport);
    const calls = [
      (signal: AbortSignal) => client.prepare({ key: "p" }, { signal }),
      (signal: AbortSignal) => client.view({ key: "v" }, { signal }),
      (signal: AbortSignal) => client.commit({ name: "n", key: "c" }, { signal }),
    ];
    for (const [index, start] of calls.entries()) {
      const controller = new AbortController();
      const pending = codeOf(start(controller.signal));
      await untilEntered(entered, index + 1);
      expect(signals[index]?.aborted).toBe(false);
      controller.abort();
      expect(await pending).toBe(Code.Canceled);
      expect(signals[index]?.aborted).toBe(true);
    }
    expect(entered).toEqual(["prepare", "view", "commit"]);
  });

  it("aborts the snapshotter's signal when the call's deadline passes", async () => {
    const { signals, entered, transport } = setupWaiting();
    const client = createClient(Snapshots, transport);
    const code = await codeOf(client.prepare({ key: "p" }, { timeoutMs: 50 }));
    expect(code).toBe(Code.DeadlineExceeded);
    expect(entered).toEqual(["prepare"]);
    expect(signals[0]?.aborted).toBe(true);
  });

  it("createRemoteSnapshotter: the options' signal cancels the RPC", async () => {
    const { signals, entered, transport } = setupWaiting();
    const configured = new AbortController();
    const remote = createRemoteSnapshotter(transport, {
      callOptions: { signal: configured.signal },
    });
    const controller = new AbortController();
    const pending = remote.prepare("k", "", { signal: controller.signal }).catch((error) => error);
    await untilEntered(entered, 1);
    controller.abort();
    const error = await pending;
    expect(SnapshotterError.is(error, ErrorCode.Canceled)).toBe(true);
    expect(signals[0]?.aborted).toBe(true);
    // The configured signal still applies beside a call's own.
    const second = remote.view("v", "", { signal: new AbortController().signal }).catch((e) => e);
    await untilEntered(entered, 2);
    configured.abort();
    expect(SnapshotterError.is(await second, ErrorCode.Canceled)).toBe(true);
    expect(signals[1]?.aborted).toBe(true);
  });
});

describe("createSnapshotsService logging", () => {
  /** A pino-shaped logger recording children and lines, its debug level switchable. */
  function recordingLogger(debug: boolean) {
    const children: Array<Record<string, unknown>> = [];
    const lines: Array<{
      level: string;
      bindings: Record<string, unknown>;
      message?: string | undefined;
    }> = [];
    const make = (bindings: Record<string, unknown>): Logger => {
      const line =
        (level: string) =>
        (_object: Record<string, unknown>, message?: string): void => {
          if (level === "debug" && !state.debug) return;
          lines.push({ level, bindings, message });
        };
      return Object.assign(
        {
          debug: line("debug"),
          info: line("info"),
          warn: line("warn"),
          error: line("error"),
          child: (more: Record<string, unknown>) => {
            children.push(more);
            return make({ ...bindings, ...more });
          },
        },
        { isLevelEnabled: (level: string) => level !== "debug" || state.debug },
      );
    };
    const state = { debug };
    return { logger: make({}), children, lines, state };
  }

  function client(logger: Logger) {
    const snapshotter = createMemorySnapshotter();
    const transport = createRouterTransport((router) => {
      router.service(Snapshots, createSnapshotsService(snapshotter, { logger }));
    });
    return createClient(Snapshots, transport);
  }

  it("makes no child logger for calls that log nothing (debug off)", async () => {
    const { logger, children, lines } = recordingLogger(false);
    const snapshots = client(logger);
    await snapshots.prepare({ key: "a" });
    await snapshots.mounts({ key: "a" });
    // NotFound is expected (logged at debug): nothing to log, no child either.
    expect(await codeOf(snapshots.stat({ key: "missing" }))).toBe(Code.NotFound);
    expect(children).toEqual([]);
    expect(lines).toEqual([]);
  });

  it("logs an unexpected error at warn through a child carrying rpc and key (debug off)", async () => {
    const { logger, children, lines } = recordingLogger(false);
    const snapshots = client(logger);
    await snapshots.prepare({ key: "a" });
    // Update of a field other than labels: the memory snapshotter's InvalidArgument.
    const code = await codeOf(
      snapshots.update({
        info: create(InfoSchema, { name: "a" }),
        updateMask: create(FieldMaskSchema, { paths: ["parent"] }),
      }),
    );
    expect(code).toBe(Code.InvalidArgument);
    expect(children).toEqual([{ rpc: "Update", key: "a" }]);
    expect(lines).toEqual([
      { level: "warn", bindings: { rpc: "Update", key: "a" }, message: "cannot update parent" },
    ]);
  });

  it("logs each call, and expected errors, at debug when debug is on (checked per call)", async () => {
    const { logger, lines, state } = recordingLogger(true);
    const snapshots = client(logger);
    await snapshots.prepare({ key: "a" });
    expect(await codeOf(snapshots.stat({ key: "missing" }))).toBe(Code.NotFound);
    state.debug = false;
    await snapshots.mounts({ key: "a" });
    expect(lines).toEqual([
      { level: "debug", bindings: { rpc: "Prepare", key: "a" }, message: "call" },
      { level: "debug", bindings: { rpc: "Stat", key: "missing" }, message: "call" },
      {
        level: "debug",
        bindings: { rpc: "Stat", key: "missing" },
        message: 'snapshot "missing" not found',
      },
    ]);
  });
});
