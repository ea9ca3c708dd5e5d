import { mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "@nix-snapshotter/nix-store";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { MetadataStore, type SnapshotHeader } from "../storage/metastore.js";
import { Kind } from "../types.js";
import { bindMode } from "./bind.js";
import { hardlinkMode } from "./hardlink.js";
import { type MountModeContext, mountModeNamed, mountModes, nixMountModes } from "./index.js";

let directory: string;
let store: MetadataStore;
let calls: string[];
let context: MountModeContext;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-mount-modes-"));
  store = new MetadataStore(join(directory, "metadata.db"));
  calls = [];
  context = {
    store,
    logger: silentLogger,
    flattened: (id) => [`/nix/store/flattened-of-${id}`],
    linkLayer: async (record) => {
      calls.push(`link ${record.id}`);
    },
    ensureMountpoints: async (record) => {
      calls.push(`mountpoints ${record.id}`);
    },
    holding: async (id, work) => {
      calls.push(`hold ${id}`);
      return work();
    },
  };
});

afterEach(async () => {
  store.close();
  await rm(directory, { recursive: true, force: true });
});

/** A committed snapshot with `nixPaths`, on `parentId`. */
function committed(key: string, parentId: number | null, nixPaths: string[]): SnapshotHeader {
  const id = store.allocateId();
  store.insert(
    { id, key, kind: Kind.Active, parentId, labels: {}, nixPaths, nixClosure: null },
    new Date(),
  );
  store.commit(id, key, {}, { size: 0, inodes: 0 }, nixPaths, new Date());
  return store.getById(id)!;
}

describe("mount mode strategies", () => {
  it("are listed once, by name; an unknown name is InvalidArgument", () => {
    expect(mountModes.map((mode) => mode.name)).toEqual(["bind", "hardlink", "none"]);
    expect(nixMountModes.every((mode) => mode.nixLayers)).toBe(true);
    expect(mountModeNamed("hardlink")).toBe(hardlinkMode);
    expect(() => mountModeNamed("copy")).toThrow(/unknown mount mode "copy"/);
  });

  it("bind: store mounts of the parent's chain, none on a nix or unpacked layer", () => {
    const base = committed("base", null, ["/nix/store/a"]);
    const child = { ...base, id: base.id + 1, nixLayer: false };
    expect(bindMode.extraMounts(child, base.id, context)).toEqual([
      {
        type: "bind",
        source: `/nix/store/flattened-of-${base.id}`,
        target: `/nix/store/flattened-of-${base.id}`,
        options: ["ro", "rbind"],
      },
    ]);
    expect(bindMode.extraMounts({ ...child, nixLayer: true }, base.id, context)).toEqual([]);
    expect(bindMode.extraMounts(child, undefined, context)).toEqual([]);
  });

  it("bind: a store path that is a symbolic link is InvalidArgument naming its label", async () => {
    const link = join(directory, "link");
    await symlink("/etc", link);
    const failure = await bindMode
      .checkLayer("k", { paths: [directory, link], labelOf: new Map([[link, "the-label"]]) })
      .catch((error: unknown) => error);
    expect(SnapshotterError.is(failure, ErrorCode.InvalidArgument)).toBe(true);
    expect((failure as Error).message).toContain('label "the-label"');
    await bindMode.checkLayer("k", { paths: [directory], labelOf: new Map() });
  });

  it("commit: bind makes mountpoints, hardlink links and reports it", async () => {
    const layer = committed("layer", null, ["/nix/store/a"]);
    expect(await bindMode.commitLayer(layer, "layer", context)).toBe(false);
    expect(await hardlinkMode.commitLayer(layer, "layer", context)).toBe(true);
    expect(calls).toEqual([`mountpoints ${layer.id}`, `link ${layer.id}`]);
    expect(hardlinkMode.extraMounts()).toEqual([]);
  });

  it("hardlink: before creating on a parent, links the chain's unlinked nix layers once, held", async () => {
    const base = committed("base", null, ["/nix/store/a"]);
    const plain = committed("plain", base.id, []);
    const top = committed("top", plain.id, ["/nix/store/b"]);
    store.markLinked(top.id);
    await hardlinkMode.beforeCreate(store.getById(top.id)!, context);
    expect(calls).toEqual([`hold ${base.id}`, `link ${base.id}`]);
    expect(store.getById(base.id)?.linked).toBe(true);
    calls = [];
    await hardlinkMode.beforeCreate(store.getById(top.id)!, context);
    expect(calls).toEqual([]);
    await bindMode.beforeCreate();
    expect(calls).toEqual([]);
  });
});
