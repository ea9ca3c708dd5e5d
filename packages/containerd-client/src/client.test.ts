import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import { Version, VersionResponseSchema } from "@nix-snapshotter/api/version/v1";
import { afterEach, describe, expect, it } from "vitest";
import { chainIds } from "./chain-id.js";
import { createContainerdClient, socketPath, validateNamespace } from "./client.js";
import { ContainerdError, isContainerdError } from "./errors.js";
import { snapshotLabelsOf } from "./labels.js";

/** A Version service on a unix socket that records the namespace header of each call. */
async function startVersionServer(path: string, namespaces: string[]): Promise<Server> {
  const server = new Server();
  const method = Version.method.version;
  server.register(
    `/${Version.typeName}/${method.name}`,
    (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      const namespace = call.metadata.get("containerd-namespace")[0];
      namespaces.push(String(namespace));
      if (namespace === "hang") return; // never answers
      if (namespace === "refuse") {
        callback({ code: status.NOT_FOUND, details: "namespace refuse: not found" });
        return;
      }
      callback(
        null,
        create(VersionResponseSchema, { version: "test", revision: String(namespace) }),
      );
    },
    (value: unknown) => Buffer.from(toBinary(VersionResponseSchema, value as never)),
    (bytes: Buffer) => bytes,
    "unary",
  );
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${path}`, ServerCredentials.createInsecure(), (error) =>
      error ? reject(error) : resolve(),
    ),
  );
  return server;
}

function stop(server: Server): Promise<void> {
  return new Promise((resolve) => server.tryShutdown(() => resolve()));
}

describe("containerd client", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it("sends the namespace header, per client and per call", async () => {
    const dir = mkdtempSync(join(tmpdir(), "containerd-client-"));
    dirs.push(dir);
    const seen: string[] = [];
    const server = await startVersionServer(join(dir, "c.sock"), seen);
    const client = createContainerdClient({
      address: `unix://${join(dir, "c.sock")}`,
      namespace: "one",
    });
    try {
      expect((await client.serverVersion()).revision).toBe("one");
      expect((await client.withNamespace("k8s.io").serverVersion()).revision).toBe("k8s.io");
      expect((await client.version.version({}, { namespace: "three" })).revision).toBe("three");
      expect(seen).toEqual(["one", "k8s.io", "three"]);
      const error = await client.version
        .version({}, { namespace: "refuse" })
        .catch((caught: unknown) => caught);
      expect(isContainerdError(error, "NotFound")).toBe(true);
      expect((error as Error).message).toBe("Version.Version: namespace refuse: not found");
    } finally {
      client.close();
      await stop(server);
    }
  });

  it("applies deadlines and cancellation", async () => {
    const dir = mkdtempSync(join(tmpdir(), "containerd-client-"));
    dirs.push(dir);
    const server = await startVersionServer(join(dir, "c.sock"), []);
    const client = createContainerdClient({ address: join(dir, "c.sock"), timeoutMs: 200 });
    try {
      const late = await client.version
        .version({}, { namespace: "hang" })
        .catch((caught: unknown) => caught);
      expect(isContainerdError(late, "DeadlineExceeded")).toBe(true);
      const controller = new AbortController();
      const pending = client.version
        .version({}, { namespace: "hang", timeoutMs: 0, signal: controller.signal })
        .catch((caught: unknown) => caught);
      controller.abort();
      expect(isContainerdError(await pending, "Canceled")).toBe(true);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });

  it("fails with Unavailable while the server is away and reconnects when it is back", async () => {
    const dir = mkdtempSync(join(tmpdir(), "containerd-client-"));
    dirs.push(dir);
    const path = join(dir, "c.sock");
    const seen: string[] = [];
    let server = await startVersionServer(path, seen);
    const client = createContainerdClient({ address: path, maxReconnectBackoffMs: 200 });
    try {
      await client.serverVersion();
      await stop(server);
      rmSync(path, { force: true });
      const error = await client.serverVersion().catch((caught: unknown) => caught);
      expect(isContainerdError(error, "Unavailable")).toBe(true);
      expect((error as Error).message).toContain(`containerd at ${path} is not reachable`);
      const waiting = await client.waitForReady(300).catch((caught: unknown) => caught);
      expect(isContainerdError(waiting, "Unavailable")).toBe(true);
      server = await startVersionServer(path, seen);
      await client.waitForReady(20_000);
      expect((await client.serverVersion()).version).toBe("test");
    } finally {
      client.close();
      await stop(server);
    }
  });

  it("refuses addresses that are not absolute socket paths, and bad namespaces", () => {
    expect(socketPath("unix:///run/c.sock")).toBe("/run/c.sock");
    expect(socketPath("/run/c.sock")).toBe("/run/c.sock");
    expect(() => socketPath("tcp://127.0.0.1:1")).toThrow(ContainerdError);
    expect(() => socketPath("relative.sock")).toThrow(/absolute unix socket/);
    expect(validateNamespace("k8s.io")).toBe("k8s.io");
    for (const bad of ["", "a/b", "-x", "x.", "a b", "x".repeat(77)]) {
      expect(() => validateNamespace(bad)).toThrow(/namespace/);
    }
  });
});

describe("chainIds", () => {
  it("follows containerd's definition", () => {
    const a = `sha256:${"a".repeat(64)}`;
    const b = `sha256:${"b".repeat(64)}`;
    const c = `sha256:${"c".repeat(64)}`;
    const ids = chainIds([a, b, c]);
    expect(ids[0]).toBe(a);
    // Computed independently: printf 'sha256:aaa... sha256:bbb...' | sha256sum
    expect(ids[1]).toBe("sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c");
    expect(ids[2]).toBe("sha256:c1377126441fb2f5ec2c21ae2a60255331d639e830f0ee1b40a36e52d4c40588");
    expect(ids).toHaveLength(3);
    expect(chainIds([])).toEqual([]);
  });
});

describe("snapshotLabelsOf", () => {
  it("keeps only containerd.io/snapshot/ annotations", () => {
    expect(
      snapshotLabelsOf({
        "containerd.io/snapshot/nix-layer": "true",
        "containerd.io/snapshot/nix-store-path.0": "/nix/store/x",
        "containerd.io/snapshot.ref": "no",
        "org.opencontainers.image.title": "no",
      }),
    ).toEqual({
      "containerd.io/snapshot/nix-layer": "true",
      "containerd.io/snapshot/nix-store-path.0": "/nix/store/x",
    });
  });
});
