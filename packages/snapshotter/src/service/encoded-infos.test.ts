import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type HandlerContext,
} from "@connectrpc/connect";
import {
  InfoSchema,
  ListSnapshotsRequestSchema,
  type ListSnapshotsResponse,
  ListSnapshotsResponseSchema,
  Snapshots,
  StatSnapshotRequestSchema,
  type StatSnapshotResponse,
  StatSnapshotResponseSchema,
} from "@nix-snapshotter/api/snapshots/v1";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createSnapshotter } from "../snapshotter.js";
import { MetadataStore } from "../storage/metastore.js";
import { Kind, type Snapshotter } from "../types.js";
import { encodedInfo, infoToMessage } from "./convert.js";
import { createSnapshotsService } from "./snapshots-service.js";

let directory: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-encoded-infos-"));
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** Clients over the binary (pre-encoded Infos) and the JSON (plain messages) encodings. */
function clients(snapshotter: Snapshotter) {
  const routes = (router: Parameters<Parameters<typeof createRouterTransport>[0]>[0]) => {
    router.service(Snapshots, createSnapshotsService(snapshotter, { listBatchSize: 2 }));
  };
  return {
    binary: createClient(Snapshots, createRouterTransport(routes)),
    json: createClient(
      Snapshots,
      createRouterTransport(routes, { transport: { useBinaryFormat: false } }),
    ),
  };
}

type Client = ReturnType<typeof clients>["binary"];

async function walk(client: Client, filters: string[] = []) {
  const found: Record<string, { kind: number; parent: string; labels: Record<string, string> }> =
    {};
  for await (const response of client.list({ filters })) {
    for (const info of response.info) {
      found[info.name] = { kind: info.kind, parent: info.parent, labels: { ...info.labels } };
    }
  }
  return found;
}

async function statLabels(client: Client, key: string) {
  const response = await client.stat({ key });
  return { ...response.info?.labels };
}

describe("encoded Infos", () => {
  it("encodedInfo is the Info message's encoding, kept for a frozen label map only", () => {
    const labels = Object.freeze({ a: "1", "nix-store-path.0": "/nix/store/x" });
    const info = {
      kind: Kind.Committed,
      name: "n",
      parent: "p",
      labels,
      created: new Date(1000),
      updated: new Date(2000),
    };
    const framed = encodedInfo(info);
    const reader = new BinaryReader(framed);
    const decoded = fromBinary(InfoSchema, reader.bytes());
    expect(decoded).toEqual(fromBinary(InfoSchema, toBinary(InfoSchema, infoToMessage(info))));
    expect(encodedInfo({ ...info })).toBe(framed);
    // Another field of the same map's snapshot: encoded again.
    const renamed = encodedInfo({ ...info, name: "m" });
    expect(renamed).not.toBe(framed);
    expect(fromBinary(InfoSchema, new BinaryReader(renamed).bytes()).name).toBe("m");
    expect(
      fromBinary(
        InfoSchema,
        new BinaryReader(encodedInfo({ ...info, updated: new Date(3000) })).bytes(),
      ).updatedAt?.seconds,
    ).toBe(3n);
    // A map that is not frozen may change: never kept.
    const mutable: Record<string, string> = { a: "1" };
    const first = encodedInfo({ ...info, labels: mutable });
    mutable.a = "2";
    const second = encodedInfo({ ...info, labels: mutable });
    expect(fromBinary(InfoSchema, new BinaryReader(first).bytes()).labels).toEqual({ a: "1" });
    expect(fromBinary(InfoSchema, new BinaryReader(second).bytes()).labels).toEqual({ a: "2" });
  });

  it("Walk and Stat show each Update, Commit and Remove of the real snapshotter at once", async () => {
    const snapshotter = await createSnapshotter({ root: directory, mountMode: "none" });
    try {
      const { binary, json } = clients(snapshotter);
      const many = Object.fromEntries(
        Array.from({ length: 500 }, (_, index) => [
          `nix-store-path.${index}`,
          `/nix/store/${index}-p`,
        ]),
      );
      await binary.prepare({ key: "a", labels: { ...many, x: "1" } });
      await binary.prepare({ key: "b", labels: { y: "1" } });
      await binary.prepare({ key: "c" });
      for (const client of [binary, json]) {
        // Twice: the second Walk and Stat answer from what the first encoded.
        for (let round = 0; round < 2; round++) {
          const found = await walk(client);
          expect(Object.keys(found).sort()).toEqual(["a", "b", "c"]);
          expect(found.a!.labels).toEqual({ ...many, x: "1" });
          expect(await statLabels(client, "b")).toEqual({ y: "1" });
          expect(Object.keys(await walk(client, ["labels.y==1"]))).toEqual(["b"]);
        }
      }

      // Update: labels and their filters.
      await binary.update({
        info: { name: "b", labels: { y: "2", z: "1" } },
        updateMask: create(FieldMaskSchema, { paths: ["labels"] }),
      });
      await binary.update({
        info: { name: "a", labels: { x: "2" } },
        updateMask: create(FieldMaskSchema, { paths: ["labels.x"] }),
      });
      for (const client of [binary, json]) {
        const found = await walk(client);
        expect(found.b!.labels).toEqual({ y: "2", z: "1" });
        expect(found.a!.labels).toEqual({ ...many, x: "2" });
        expect(await statLabels(client, "b")).toEqual({ y: "2", z: "1" });
        expect(await statLabels(client, "a")).toEqual({ ...many, x: "2" });
        expect(Object.keys(await walk(client, ["labels.y==1"]))).toEqual([]);
        expect(Object.keys(await walk(client, ["labels.z==1"]))).toEqual(["b"]);
      }

      // Commit: a new name, kind and labels for the same snapshot (same id).
      await binary.commit({ name: "committed-a", key: "a", labels: { w: "1" } });
      await binary.prepare({ key: "child", parent: "committed-a" });
      for (const client of [binary, json]) {
        const found = await walk(client);
        expect(Object.keys(found).sort()).toEqual(["b", "c", "child", "committed-a"]);
        expect(found["committed-a"]).toEqual({ kind: 3, parent: "", labels: { w: "1" } });
        expect(found.child!.parent).toBe("committed-a");
        expect(await statLabels(client, "committed-a")).toEqual({ w: "1" });
        await expect(client.stat({ key: "a" })).rejects.toMatchObject({ code: Code.NotFound });
      }

      // Remove.
      await binary.remove({ key: "b" });
      for (const client of [binary, json]) {
        expect(Object.keys(await walk(client)).sort()).toEqual(["c", "child", "committed-a"]);
        const error = await client.stat({ key: "b" }).catch((caught: unknown) => caught);
        expect(ConnectError.from(error).code).toBe(Code.NotFound);
      }
    } finally {
      await snapshotter.close();
    }
  });

  it("binaryResponses: Stat and List answer pre-encoded Infos without reading the request's headers", async () => {
    const snapshotter = await createSnapshotter({ root: directory, mountMode: "none" });
    try {
      await snapshotter.prepare("a", "", { labels: { x: "1" } });
      const service = createSnapshotsService(snapshotter, { binaryResponses: true });
      const context = {
        signal: new AbortController().signal,
        get requestHeader(): Headers {
          throw new Error("the request's headers were read");
        },
      } as unknown as HandlerContext;
      const stat = await service.stat(create(StatSnapshotRequestSchema, { key: "a" }), context);
      const decoded = fromBinary(
        StatSnapshotResponseSchema,
        toBinary(StatSnapshotResponseSchema, stat as StatSnapshotResponse),
      );
      expect(decoded.info?.name).toBe("a");
      expect(decoded.info?.labels).toEqual({ x: "1" });
      const names: string[] = [];
      for await (const response of service.list(create(ListSnapshotsRequestSchema), context)) {
        const listed = fromBinary(
          ListSnapshotsResponseSchema,
          toBinary(ListSnapshotsResponseSchema, response as ListSnapshotsResponse),
        );
        names.push(...listed.info.map((info) => info.name));
      }
      expect(names).toEqual(["a"]);
    } finally {
      await snapshotter.close();
    }
  });

  it("a rolled-back write leaves no encoding of its labels behind", async () => {
    const store = new MetadataStore(join(directory, "metadata.db"));
    try {
      const now = new Date();
      const id = store.allocateId();
      store.transaction(() =>
        store.insert(
          {
            id,
            key: "k",
            kind: Kind.Active,
            parentId: null,
            labels: { a: "1" },
            nixPaths: [],
            nixClosure: null,
          },
          now,
        ),
      );
      // Only Stat and List reach this snapshotter: they read the store as the real one does.
      const snapshotter = {
        stat: async (key: string) => store.info(store.getByKey(key)!),
        list: (_filters?: readonly string[]) => ({
          async *[Symbol.asyncIterator]() {
            yield* store.allInfos();
          },
        }),
      } as unknown as Snapshotter;
      const { binary } = clients(snapshotter);
      expect((await walk(binary)).k!.labels).toEqual({ a: "1" });
      expect(() =>
        store.transaction(() => {
          store.updateLabels(id, { a: "2" }, now);
          // Encoded inside the transaction, as a Walk would if it could run there.
          const inside = encodedInfo(store.allInfos()[0]!);
          expect(fromBinary(InfoSchema, new BinaryReader(inside).bytes()).labels).toEqual({
            a: "2",
          });
          throw new Error("roll back");
        }),
      ).toThrow("roll back");
      expect((await walk(binary)).k!.labels).toEqual({ a: "1" });
      expect(await statLabels(binary, "k")).toEqual({ a: "1" });
    } finally {
      store.close();
    }
  });
});
