import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { Health } from "@nix-snapshotter/api/health/v1";
import type { NixStore } from "@nix-snapshotter/nix-store";
import { createHealthService } from "@nix-snapshotter/snapshotter";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { listenGrpc } from "./grpc-server.js";
import { Registry } from "./metrics.js";
import { createDaemonMetrics } from "./rpc-metrics.js";
import { unixGrpcTransport } from "./testing/daemon-process.js";

describe("createDaemonMetrics observe", () => {
  it("counts and times unary calls by code, and streams when they end", async () => {
    const registry = new Registry();
    const metrics = createDaemonMetrics(registry);
    const health = createHealthService(["a.Service"]);
    const work = await mkdtemp(join(tmpdir(), "rpc-metrics-"));
    const server = await listenGrpc({
      address: join(work, "daemon.sock"),
      logger: pino({ level: "silent" }),
      observe: metrics.observe,
      routes: (router) => {
        router.service(Health, health.impl);
      },
    });
    const connection = unixGrpcTransport(server.address);
    try {
      const client = createClient(Health, connection.transport);
      await client.check({ service: "" });
      await client.check({ service: "a.Service" });
      await client.check({ service: "missing" }).catch(() => {});
      const stream = client.watch({ service: "" });
      const iterator = stream[Symbol.asyncIterator]();
      await iterator.next();
      const service = "grpc.health.v1.Health";
      // The stream is still open: not counted yet.
      expect(metrics.requests.get({ service, method: "Watch", code: "OK" })).toBe(0);
      health.shutdown();
      while (!(await iterator.next()).done) {
        // drain
      }

      expect(metrics.requests.get({ service, method: "Check", code: "OK" })).toBe(2);
      expect(metrics.requests.get({ service, method: "Check", code: "NotFound" })).toBe(1);
      expect(metrics.requests.get({ service, method: "Watch", code: "OK" })).toBe(1);
      const text = await registry.render();
      expect(text).toContain(
        `nix_snapshotter_grpc_request_duration_seconds_count{service="${service}",method="Check",code="OK"} 2`,
      );
      expect(text).toContain("# TYPE nix_snapshotter_realise_duration_seconds histogram");
    } finally {
      connection.close();
      await server.close(0);
      await rm(work, { recursive: true, force: true });
    }
  });
});

describe("createDaemonMetrics observedNixStore", () => {
  it("passes the owner and the caller's signal to Nix, and counts the failure", async () => {
    const registry = new Registry();
    const metrics = createDaemonMetrics(registry);
    const seen: Array<{ roots?: { owner: string }; signal?: AbortSignal }> = [];
    const nixStore = {
      storeDir: "/nix/store",
      gcRootsDir: "/nonexistent",
      async realise(_paths: readonly string[], options: (typeof seen)[number]) {
        seen.push(options);
        throw new Error("canceled");
      },
    } as unknown as NixStore;
    const port = metrics.observedNixStore(nixStore);
    const controller = new AbortController();
    await expect(
      port.realise(["/nix/store/x"], { owner: "o", signal: controller.signal }),
    ).rejects.toThrow("canceled");
    await expect(port.realise(["/nix/store/x"], { owner: "p" })).rejects.toThrow("canceled");
    expect(seen[0]).toEqual({ roots: { owner: "o" }, signal: controller.signal });
    expect(seen[1]).toEqual({ roots: { owner: "p" } });
    expect(await registry.render()).toMatch(
      /nix_snapshotter_realise_duration_seconds_count\{result="error"\} 2/,
    );
  });
});
