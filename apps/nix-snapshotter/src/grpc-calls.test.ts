import { mkdtemp, rm } from "node:fs/promises";
import { constants } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brotliCompressSync, gzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
  HealthListResponseSchema,
} from "@nix-snapshotter/api/health/v1";
import { ListSnapshotsResponseSchema, Snapshots } from "@nix-snapshotter/api/snapshots/v1";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GrpcServer, listenGrpc } from "./grpc-server.js";
import { unixGrpcTransport } from "./testing/daemon-process.js";
import { envelope, rawCall } from "./testing/raw-grpc.js";

/**
 * The daemon's gRPC server from a call's point of view: routing, what an implementation sees in
 * its HandlerContext (headers, deadline, a signal aborted only on cancellation), statuses of
 * thrown errors, and a server stream that waits for a slow reader.
 */

const MiB = 1024 * 1024;
const checkPath = "/grpc.health.v1.Health/Check";
const listPath = "/containerd.services.snapshots.v1.Snapshots/List";

function checkRequest(service: string): Buffer {
  return envelope(
    toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service })),
  );
}

const delay = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

describe("the daemon's gRPC server runs calls", () => {
  let work: string;
  let server: GrpcServer;
  let address: string;
  /** Contexts the Check implementation saw, by the request's service name. */
  const contexts = new Map<string, HandlerContext>();
  const entered = new Map<string, () => void>();
  const observed: Array<{ method: string; code: Code | undefined }> = [];
  /** List: messages produced so far. */
  let produced = 0;
  let listDone = false;

  function until(name: string): Promise<void> {
    return new Promise((resolve) => entered.set(name, resolve));
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "grpc-calls-"));
    address = join(work, "daemon.sock");
    server = await listenGrpc({
      address,
      logger: pino({ level: "silent" }),
      observe: (_service, method, _start, code) => observed.push({ method, code }),
      routes: (router) => {
        router.service(Health, {
          async check(request, context) {
            contexts.set(request.service, context);
            entered.get(request.service)?.();
            switch (request.service) {
              case "wait": {
                // Until the signal aborts.
                await new Promise((resolve) => context.signal.addEventListener("abort", resolve));
                throw context.signal.reason;
              }
              case "far":
                // Long enough for a timer Node fired early to be seen.
                await delay(100);
                break;
              case "plain-error":
                throw new Error("disk on fire");
              case "details":
                throw new ConnectError("with details", Code.FailedPrecondition, undefined, [
                  { desc: HealthCheckRequestSchema, value: { service: "detail" } },
                ]);
              case "init":
                // An init shape, not a message: encoded as the output type.
                return { status: HealthCheckResponse_ServingStatus.NOT_SERVING };
            }
            return create(HealthCheckResponseSchema, {
              status: HealthCheckResponse_ServingStatus.SERVING,
            });
          },
          list: () => create(HealthListResponseSchema, {}),
        });
        router.service(Snapshots, {
          async *list() {
            listDone = false;
            for (let index = 0; index < 16; index++) {
              produced = index + 1;
              yield create(ListSnapshotsResponseSchema, {
                info: [{ name: `s${index}`, labels: { big: "x".repeat(MiB) } }],
              });
            }
            listDone = true;
          },
        });
      },
    });
  });
  afterAll(async () => {
    await server?.close(0);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("gives the implementation the request headers, no deadline, and a signal not aborted after", async () => {
    const result = await rawCall(address, checkPath, checkRequest("headers"), {
      headers: { "x-probe": "1" },
    });
    expect(result.status).toBe("0");
    expect(result.messages).toHaveLength(1);
    const context = contexts.get("headers")!;
    expect(context.requestHeader.get("content-type")).toBe("application/grpc");
    expect(context.requestHeader.get("x-probe")).toBe("1");
    expect([...context.requestHeader.keys()].filter((name) => name.startsWith(":"))).toEqual([]);
    expect(context.timeoutMs()).toBeUndefined();
    expect(context.method.name).toBe("Check");
    expect(context.service.typeName).toBe("grpc.health.v1.Health");
    expect(context.signal.aborted).toBe(false);
    expect(observed).toContainEqual({ method: "Check", code: undefined });
  });

  it("answers a call whose :authority is the socket's path (Debian's grpc-go 1.33 default)", async () => {
    const result = await rawCall(address, checkPath, checkRequest("authority"), {
      headers: { ":authority": address },
    });
    expect(result.status).toBe("0");
    expect(result.messages).toHaveLength(1);
  });

  it("encodes an init shape as the output message", async () => {
    const result = await rawCall(address, checkPath, checkRequest("init"));
    expect(result.status).toBe("0");
    expect(fromBinary(HealthCheckResponseSchema, result.messages[0]!).status).toBe(
      HealthCheckResponse_ServingStatus.NOT_SERVING,
    );
  });

  it("inflates a gzip or brotli request", async () => {
    const payload = gzipSync(
      toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service: "gz" })),
    );
    const result = await rawCall(address, checkPath, envelope(payload, true), {
      headers: { "grpc-encoding": "gzip" },
    });
    expect(result.status).toBe("0");
    expect(contexts.has("gz")).toBe(true);
    const brotli = brotliCompressSync(
      toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service: "br" })),
    );
    const second = await rawCall(address, checkPath, envelope(brotli, true), {
      headers: { "grpc-encoding": "br" },
    });
    expect(second.status).toBe("0");
    expect(contexts.has("br")).toBe(true);
  });

  it("refuses an unknown encoding with Unimplemented and names the one it accepts", async () => {
    const result = await rawCall(address, checkPath, checkRequest(""), {
      headers: { "grpc-encoding": "snappy" },
    });
    expect(result.status).toBe(String(Code.Unimplemented));
    expect(result.fields["grpc-accept-encoding"]).toBe("gzip,br");
  });

  it("answers an unknown method with Unimplemented, and a non-gRPC content type with HTTP 415", async () => {
    for (const path of [
      "/grpc.health.v1.Health/Nope",
      "/containerd.services.snapshots.v1.Snapshots/Stat",
    ]) {
      const result = await rawCall(address, path, checkRequest(""));
      expect(result.status, path).toBe(String(Code.Unimplemented));
      expect(result.httpStatus, path).toBe(200);
    }
    const json = await rawCall(address, checkPath, Buffer.from("{}"), {
      headers: { "content-type": "application/json" },
    });
    expect(json.httpStatus).toBe(415);
    expect(json.status).toBeUndefined();
  });

  it("answers a thrown ConnectError with its code, message and details, others as Unknown", async () => {
    const connection = unixGrpcTransport(address);
    try {
      const client = createClient(Health, connection.transport);
      const withDetails = await client.check({ service: "details" }).then(
        () => undefined,
        (error: unknown) => ConnectError.from(error),
      );
      expect(withDetails?.code).toBe(Code.FailedPrecondition);
      expect(withDetails?.rawMessage).toBe("with details");
      expect(withDetails?.findDetails(HealthCheckRequestSchema)).toEqual([
        expect.objectContaining({ service: "detail" }),
      ]);
      const plain = await client.check({ service: "plain-error" }).then(
        () => undefined,
        (error: unknown) => ConnectError.from(error),
      );
      // As connect-es and grpc-go servers do: an error without a code is Unknown.
      expect(plain?.code).toBe(Code.Unknown);
      expect(plain?.rawMessage).toBe("disk on fire");
    } finally {
      connection.close();
    }
  });

  it("refuses a malformed grpc-timeout, keeps a far one, and a passed deadline aborts the call with DeadlineExceeded", async () => {
    const malformed = await rawCall(address, checkPath, checkRequest(""), {
      headers: { "grpc-timeout": "soon" },
    });
    expect(malformed.status).toBe(String(Code.InvalidArgument));
    // Beyond setTimeout's range (Node would fire such a timer at once): no early DeadlineExceeded.
    const far = await rawCall(address, checkPath, checkRequest("far"), {
      headers: { "grpc-timeout": "99999999H" },
    });
    expect(far.status).toBe("0");
    expect(contexts.get("far")!.timeoutMs()).toBeGreaterThan(2 ** 31);

    const result = await rawCall(address, checkPath, checkRequest("wait"), {
      headers: { "grpc-timeout": "300m" },
    });
    expect(result.status).toBe(String(Code.DeadlineExceeded));
    const signal = contexts.get("wait")!.signal;
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(ConnectError);
    expect((signal.reason as ConnectError).code).toBe(Code.DeadlineExceeded);
    expect(observed).toContainEqual({ method: "Check", code: Code.DeadlineExceeded });
  });

  it("aborts the call's signal with Canceled when the client resets the stream", async () => {
    contexts.delete("wait");
    const inside = until("wait");
    const result = await rawCall(address, checkPath, checkRequest("wait"), {
      onRequest: (stream) => {
        void inside.then(() => stream.close(constants.NGHTTP2_CANCEL));
      },
    });
    expect(result.status).toBeUndefined();
    const signal = contexts.get("wait")!.signal;
    for (let tries = 0; tries < 100 && !signal.aborted; tries++) await delay(20);
    expect(signal.aborted).toBe(true);
    expect((signal.reason as ConnectError).code).toBe(Code.Canceled);
    expect(observed).toContainEqual({ method: "Check", code: Code.Canceled });
  });

  it("waits for a slow reader of a server stream (MiB messages), then sends it all", async () => {
    let producedWhilePaused = -1;
    const result = await rawCall(address, listPath, envelope(new Uint8Array(0)), {
      onRequest: (stream) => {
        stream.pause();
        void delay(500).then(() => {
          producedWhilePaused = produced;
          stream.resume();
        });
      },
    });
    // Nothing was read for 500 ms: HTTP/2's flow control held the stream after the first messages.
    expect(producedWhilePaused).toBeGreaterThan(0);
    expect(producedWhilePaused).toBeLessThan(4);
    expect(result.status).toBe("0");
    expect(listDone).toBe(true);
    expect(result.messages).toHaveLength(16);
    const last = fromBinary(ListSnapshotsResponseSchema, result.messages[15]!);
    expect(last.info[0]?.name).toBe("s15");
  });
});
