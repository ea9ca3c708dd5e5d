import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
  HealthListResponseSchema,
} from "@nix-snapshotter/api/health/v1";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { claimSocketPath, type GrpcServer, listenGrpc } from "./grpc-server.js";
import { unixGrpcTransport } from "./testing/daemon-process.js";

const logger = pino({ level: "silent" });

/** A health service whose Check waits until `release()` is called. */
function slowHealth() {
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let entered: () => void = () => {};
  const inside = new Promise<void>((resolve) => {
    entered = resolve;
  });
  return {
    release,
    inside,
    impl: {
      async check() {
        entered();
        await released;
        return create(HealthCheckResponseSchema, {
          status: HealthCheckResponse_ServingStatus.SERVING,
        });
      },
      list: () => create(HealthListResponseSchema, {}),
      async *watch() {},
    },
  };
}

describe("listenGrpc", () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function directory(): Promise<string> {
    const path = await mkdtemp(join(tmpdir(), "grpc-server-"));
    cleanups.push(() => rm(path, { recursive: true, force: true }));
    return path;
  }

  async function start(address: string, health = slowHealth()): Promise<GrpcServer> {
    const server = await listenGrpc({
      address,
      logger,
      routes: (router) => router.service(Health, health.impl),
    });
    cleanups.push(() => server.close(0));
    return server;
  }

  it("creates a missing directory 0700 and the socket 0600", async () => {
    const address = join(await directory(), "new", "daemon.sock");
    await start(address);
    expect((await stat(join(address, ".."))).mode & 0o777).toBe(0o700);
    const socket = await stat(address);
    expect(socket.isSocket()).toBe(true);
    expect(socket.mode & 0o777).toBe(0o600);
  });

  it("lets an in-flight call finish on close, refuses new connections, removes the socket", async () => {
    const address = join(await directory(), "daemon.sock");
    const health = slowHealth();
    const server = await start(address, health);
    const connection = unixGrpcTransport(address);
    cleanups.push(() => connection.close());
    const client = createClient(Health, connection.transport);
    const call = client.check({ service: "" });
    await health.inside;
    const closed = server.close(10_000);
    health.release();
    expect((await call).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    await closed;
    await expect(stat(address)).rejects.toMatchObject({ code: "ENOENT" });
    const late = unixGrpcTransport(address);
    cleanups.push(() => late.close());
    const error = await createClient(Health, late.transport)
      .check({ service: "" })
      .catch((caught: unknown) => ConnectError.from(caught));
    // connect-node reports the failed connect (ENOENT) as Internal.
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).message).toContain("ENOENT");
  });

  it("refuses an address where another server answers, and leaves it serving", async () => {
    const address = join(await directory(), "daemon.sock");
    const health = slowHealth();
    health.release();
    await start(address, health);
    await expect(start(address)).rejects.toThrow(`another server is listening on ${address}`);
    const connection = unixGrpcTransport(address);
    cleanups.push(() => connection.close());
    expect((await createClient(Health, connection.transport).check({})).status).toBe(
      HealthCheckResponse_ServingStatus.SERVING,
    );
  });

  it("never removes a path that is not a socket", async () => {
    const path = join(await directory(), "precious");
    await writeFile(path, "data");
    await expect(claimSocketPath(path)).rejects.toThrow(`${path} exists and is not a socket`);
    expect(await readFile(path, "utf8")).toBe("data");
  });
});
