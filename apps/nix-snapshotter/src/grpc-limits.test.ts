import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brotliCompressSync, gzipSync, constants as zlibConstants } from "node:zlib";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { Health } from "@nix-snapshotter/api/health/v1";
import { createHealthService } from "@nix-snapshotter/snapshotter";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type GrpcServer,
  listenGrpc,
  maxReceiveMessageBytes,
  maxStatusMessageLength,
} from "./grpc-server.js";
import { errorStatus } from "./grpc-wire.js";
import { unixGrpcTransport } from "./testing/daemon-process.js";
import { envelope, rawCall } from "./testing/raw-grpc.js";

/**
 * The daemon's gRPC server under hostile requests (issue 14), spoken to in raw HTTP/2 frames so
 * that nothing on the client side cleans the request up: each gets a gRPC status that says what
 * was wrong, and the process's memory does not follow the attacker's sizes.
 */

const MiB = 1024 * 1024;
const checkPath = "/grpc.health.v1.Health/Check";

/** Protobuf field 1 (length-delimited) holding `bytes`: HealthCheckRequest.service. */
function serviceField(bytes: Buffer): Buffer {
  let length = bytes.byteLength;
  const varint: number[] = [];
  while (length > 0x7f) {
    varint.push((length & 0x7f) | 0x80);
    length = Math.floor(length / 128);
  }
  varint.push(length);
  return Buffer.concat([Buffer.from([0x0a, ...varint]), bytes]);
}

describe("the daemon's gRPC server bounds what it reads and what it answers", () => {
  let work: string;
  let server: GrpcServer;
  let address: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "grpc-limits-"));
    address = join(work, "daemon.sock");
    const health = createHealthService();
    server = await listenGrpc({
      address,
      logger: pino({ level: "silent" }),
      routes: (router) => {
        router.service(Health, health.impl);
      },
    });
  });
  afterAll(async () => {
    await server?.close(0);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("answers an honest call", async () => {
    const result = await rawCall(address, checkPath, envelope(serviceField(Buffer.from(""))));
    expect(result.status).toBe("0");
  });

  it("refuses a message over 4 MiB with ResourceExhausted, before reading it whole", async () => {
    expect(maxReceiveMessageBytes).toBe(4 * MiB);
    const result = await rawCall(
      address,
      checkPath,
      envelope(serviceField(Buffer.alloc(5 * MiB, 0x61))),
    );
    expect(result.status).toBe(String(Code.ResourceExhausted));
    expect(result.message).toContain(`larger than the limit of ${maxReceiveMessageBytes} bytes`);
  });

  it("refuses a 1 MiB gzip message inflating to 1 GiB without inflating it all", async () => {
    // 1 GiB of zeros as concatenated gzip members of 16 MiB: about 1 MiB compressed.
    const member = gzipSync(Buffer.alloc(16 * MiB), { level: 9 });
    const head = gzipSync(Buffer.from([0x0a, 0x80, 0x80, 0x80, 0x80, 0x04]));
    const payload = Buffer.concat([head, ...Array.from({ length: 64 }, () => member)]);
    expect(payload.byteLength).toBeLessThan(2 * MiB);
    const before = process.memoryUsage().rss;
    const result = await rawCall(address, checkPath, envelope(payload, true), {
      headers: { "grpc-encoding": "gzip" },
    });
    expect(result.status).toBe(String(Code.ResourceExhausted));
    expect(result.message).toContain("after decompression");
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * MiB);
  });

  it("refuses a brotli message inflating to 64 MiB the same way", async () => {
    const payload = brotliCompressSync(Buffer.alloc(64 * MiB), {
      params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 1 },
    });
    expect(payload.byteLength).toBeLessThan(MiB);
    const result = await rawCall(address, checkPath, envelope(payload, true), {
      headers: { "grpc-encoding": "br" },
    });
    expect(result.status).toBe(String(Code.ResourceExhausted));
    expect(result.message).toContain("after decompression");
  });

  it("answers malformed protobuf and invalid UTF-8 with InvalidArgument", async () => {
    for (const [what, payload] of [
      ["truncated field", Buffer.from([0x0a, 0x10, 0x61])],
      ["bad wire type", Buffer.from([0x0f, 0xff, 0xff, 0xff])],
      ["invalid UTF-8", serviceField(Buffer.from([0xc3, 0x28, 0xff, 0xfe]))],
    ] as const) {
      const result = await rawCall(address, checkPath, envelope(payload));
      expect(result.status, what).toBe(String(Code.InvalidArgument));
      expect(result.message, what).toMatch(/^malformed request message: /);
    }
  });

  it("cuts long status messages: a 1 MiB one is a normal, small status", async () => {
    const bound = errorStatus(
      new ConnectError(`reference "nix:0/${"a".repeat(MiB)}": invalid`, Code.InvalidArgument),
    );
    const message = decodeURIComponent(String(bound["grpc-message"]));
    expect(message.length).toBeLessThan(maxStatusMessageLength + 64);
    expect(message).toContain(
      `(${`reference "nix:0/${"a".repeat(MiB)}": invalid`.length} characters)`,
    );
    expect(bound["grpc-status"]).toBe("3");
    // Through the server: the health service echoes the unknown service name in NotFound.
    const connection = unixGrpcTransport(address);
    try {
      const error = await createClient(Health, connection.transport)
        .check({ service: "x".repeat(MiB) })
        .then(
          () => undefined,
          (caught: unknown) => ConnectError.from(caught),
        );
      expect(error?.code).toBe(Code.NotFound);
      expect(error!.rawMessage.length).toBeLessThan(maxStatusMessageLength + 64);
    } finally {
      connection.close();
    }
  });
});
