import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { InfoSchema, Snapshots } from "@nix-snapshotter/api/snapshots/v1";
import { describe, expect, it } from "vitest";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { type Info, Kind, type Snapshotter } from "../types.js";
import {
  checkLabelLimits,
  defaultLabelLimits,
  labelBytes,
  labelsAfterUpdate,
} from "./label-limits.js";
import { createSnapshotsService } from "./snapshots-service.js";

/** Labels of `count` keys, each key plus value `size` bytes. */
function labels(
  count: number,
  size: number,
  prefix = "containerd.io/snapshot/x.",
): Record<string, string> {
  const result: Record<string, string> = {};
  for (let index = 0; index < count; index++) {
    const key = `${prefix}${index}`;
    result[key] = "v".repeat(size - key.length);
  }
  return result;
}

/** A stand-in snapshotter that stores labels and records which calls reached it. */
function recordingSnapshotter(): Snapshotter & { calls: string[]; infos: Map<string, Info> } {
  const calls: string[] = [];
  const infos = new Map<string, Info>();
  const info = (name: string, labelMap: Record<string, string>): Info => ({
    kind: Kind.Active,
    name,
    parent: "",
    labels: labelMap,
    created: new Date(0),
    updated: new Date(0),
  });
  const methods: Pick<Snapshotter, "prepare" | "view" | "commit" | "stat" | "update" | "list"> = {
    async prepare(key, _parent, options) {
      calls.push(`prepare ${key}`);
      infos.set(key, info(key, { ...options?.labels }));
      return [];
    },
    async view(key, _parent, options) {
      calls.push(`view ${key}`);
      infos.set(key, info(key, { ...options?.labels }));
      return [];
    },
    async commit(name, key, options) {
      calls.push(`commit ${name}`);
      infos.delete(key);
      infos.set(name, info(name, { ...options?.labels }));
    },
    async stat(key) {
      calls.push(`stat ${key}`);
      const found = infos.get(key);
      if (found === undefined) throw new SnapshotterError(ErrorCode.NotFound, `no ${key}`);
      return found;
    },
    async update(update, paths = []) {
      calls.push(`update ${update.name}`);
      const current = infos.get(update.name)!;
      const next = info(update.name, labelsAfterUpdate(current.labels, update.labels, paths));
      infos.set(update.name, next);
      return next;
    },
    async *list() {
      for (const value of infos.values()) yield value;
    },
  };
  // Only the calls the tests make exist: anything else would fail loudly.
  return Object.assign(methods, { calls, infos }) as unknown as Snapshotter & {
    calls: string[];
    infos: Map<string, Info>;
  };
}

function clientFor(
  snapshotter: Snapshotter,
  options: Parameters<typeof createSnapshotsService>[1] = {},
) {
  const transport = createRouterTransport((router) => {
    router.service(Snapshots, createSnapshotsService(snapshotter, options));
  });
  return createClient(Snapshots, transport);
}

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => ConnectError.from(caught),
  );
  expect(error).toBeInstanceOf(ConnectError);
  return error!;
}

describe("label limits", () => {
  it("has containerd's per-label limit and documented totals", () => {
    expect(defaultLabelLimits).toEqual({
      maxLabelBytes: 4096,
      maxLabels: 16_384,
      maxTotalBytes: 1024 * 1024,
    });
    expect(labelBytes({ ab: "cd", é: "" })).toBe(6);
  });

  it("names the bound each refusal exceeds, and quotes keys truncated", () => {
    expect(() =>
      checkLabelLimits(labels(2, 100), "snapshot s", { ...defaultLabelLimits, maxLabels: 1 }),
    ).toThrow(/snapshot s: 2 labels, more than maxLabels \(1\)/);
    const longKey = `containerd.io/snapshot/${"k".repeat(5000)}`;
    let message = "";
    try {
      checkLabelLimits({ [longKey]: "" }, "snapshot s");
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain("maxLabelBytes (4096)");
    expect(message.length).toBeLessThan(300);
    expect(() => checkLabelLimits(labels(300, 4000), "snapshot s")).toThrow(
      /maxTotalBytes \(1048576\)/,
    );
    expect(() => checkLabelLimits(labels(200, 4000), "snapshot s")).not.toThrow();
  });

  it("computes the labels an Update leaves, as containerd does", () => {
    const current = { a: "1", b: "2" };
    expect(labelsAfterUpdate(current, { c: "3" }, [])).toEqual({ c: "3" });
    expect(labelsAfterUpdate(current, { c: "3" }, ["labels"])).toEqual({ c: "3" });
    expect(labelsAfterUpdate(current, { c: "3" }, ["labels.c", "labels.a"])).toEqual({
      b: "2",
      c: "3",
    });
  });
});

describe("the Snapshots service enforces label limits before the snapshotter is called", () => {
  it("refuses the issue's 64 MiB Prepare of labels each under 4 KiB; stores nothing", async () => {
    const snapshotter = recordingSnapshotter();
    const client = clientFor(snapshotter);
    // The issue sent 64 MiB (about 16 500 labels of 4000 bytes); 300 of them already exceed
    // the total, and the in-process transport has no message size limit of its own.
    const error = await refusal(
      client.prepare({ key: "k8s.io/1/big", parent: "", labels: labels(300, 4000) }),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toContain("maxTotalBytes");
    expect(error.rawMessage).toContain("k8s.io/1/big");
    const many = await refusal(
      client.view({ key: "k8s.io/1/many", parent: "", labels: labels(20_000, 40) }),
    );
    expect(many.rawMessage).toContain("maxLabels (16384)");
    const commit = await refusal(
      client.commit({ name: "k8s.io/1/c", key: "k8s.io/1/a", labels: labels(300, 4000) }),
    );
    expect(commit.rawMessage).toContain("maxTotalBytes");
    expect(snapshotter.calls).toEqual([]);
    expect(snapshotter.infos.size).toBe(0);
  });

  it("bounds Updates by the labels they leave, per key or whole", async () => {
    const snapshotter = recordingSnapshotter();
    const client = clientFor(snapshotter);
    await client.prepare({ key: "s", parent: "", labels: labels(200, 4000, "a.") });
    // Growing the labels one key at a time stops at the total.
    let refused: ConnectError | undefined;
    for (let index = 0; index < 100 && refused === undefined; index++) {
      const key = `b.${index}`;
      refused = await client
        .update({
          info: create(InfoSchema, { name: "s", labels: { [key]: "v".repeat(4000) } }),
          updateMask: create(FieldMaskSchema, { paths: [`labels.${key}`] }),
        })
        .then(
          () => undefined,
          (error: unknown) => ConnectError.from(error),
        );
    }
    expect(refused?.code).toBe(Code.InvalidArgument);
    expect(refused?.rawMessage).toContain("maxTotalBytes");
    expect(labelBytes(snapshotter.infos.get("s")!.labels)).toBeLessThanOrEqual(1024 * 1024);
    // A replacement is bounded by itself.
    const whole = await refusal(
      client.update({
        info: create(InfoSchema, { name: "s", labels: labels(300, 4000) }),
        updateMask: create(FieldMaskSchema, { paths: ["labels"] }),
      }),
    );
    expect(whole.rawMessage).toContain("maxTotalBytes");
    await client.update({
      info: create(InfoSchema, { name: "s", labels: { only: "one" } }),
      updateMask: create(FieldMaskSchema, { paths: ["labels"] }),
    });
    expect(snapshotter.infos.get("s")!.labels).toEqual({ only: "one" });
  });

  it("sends List in messages of bounded size", async () => {
    const snapshotter = recordingSnapshotter();
    const client = clientFor(snapshotter, { listMessageBytes: 64 * 1024 });
    for (let index = 0; index < 40; index++) {
      await client.prepare({ key: `s${index}`, parent: "", labels: labels(8, 4000) });
    }
    const sizes: number[] = [];
    let total = 0;
    for await (const response of client.list({})) {
      sizes.push(response.info.length);
      total += response.info.length;
    }
    expect(total).toBe(40);
    // 32 KB of labels per snapshot, 64 KiB per message: at most two snapshots each.
    expect(Math.max(...sizes)).toBeLessThanOrEqual(2);
  });
});
