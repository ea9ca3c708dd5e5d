import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import { Version } from "@nix-snapshotter/api/version/v1";
import { CodedError, type ErrorCode, errorCodes } from "@nix-snapshotter/errdefs";
import { afterEach, describe, expect, it } from "vitest";
import { createContainerdClient } from "./client.js";
import { ContainerdError, isContainerdError, toContainerdError, toGrpcStatus } from "./errors.js";

/** grpc-js's name of each status (`CANCELLED`, spelled as gRPC's C core spells it). */
const grpcJsNames: Record<ErrorCode, keyof typeof status> = {
  Canceled: "CANCELLED",
  Unknown: "UNKNOWN",
  InvalidArgument: "INVALID_ARGUMENT",
  DeadlineExceeded: "DEADLINE_EXCEEDED",
  NotFound: "NOT_FOUND",
  AlreadyExists: "ALREADY_EXISTS",
  PermissionDenied: "PERMISSION_DENIED",
  ResourceExhausted: "RESOURCE_EXHAUSTED",
  FailedPrecondition: "FAILED_PRECONDITION",
  Aborted: "ABORTED",
  OutOfRange: "OUT_OF_RANGE",
  Unimplemented: "UNIMPLEMENTED",
  Internal: "INTERNAL",
  Unavailable: "UNAVAILABLE",
  DataLoss: "DATA_LOSS",
  Unauthenticated: "UNAUTHENTICATED",
};

describe("grpc-js status conversion", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it("maps each code to grpc-js's status and back", () => {
    for (const code of errorCodes) {
      const sent = toGrpcStatus(new ContainerdError(code, `failed with ${code}`));
      expect(sent.code).toBe(status[grpcJsNames[code]]);
      expect(sent.details).toBe(`failed with ${code}`);
      const back = toContainerdError(
        Object.assign(new Error(`${sent.code} ${sent.details}`), sent),
        "Version.Version",
        "containerd at /test.sock",
      );
      expect(back.code).toBe(code);
      expect(back.message).toBe(
        code === "Unavailable"
          ? `Version.Version: containerd at /test.sock is not reachable: failed with ${code}`
          : `Version.Version: failed with ${code}`,
      );
      expect(CodedError.is(back, code)).toBe(true);
    }
    expect(toGrpcStatus(new Error("boom")).code).toBe(status.INTERNAL);
    expect(toContainerdError({ code: 99, details: "odd" }, "R", "t").code).toBe("Unknown");
    expect(toContainerdError(new Error("no status"), "R", "t").message).toBe("R: no status");
    const own = new ContainerdError("NotFound", "kept");
    expect(toContainerdError(own, "R", "t")).toBe(own);
  });

  it("carries every code from a grpc-js server through the client", async () => {
    const dir = mkdtempSync(join(tmpdir(), "containerd-client-errors-"));
    dirs.push(dir);
    const path = join(dir, "c.sock");
    const server = new Server();
    // The namespace header names the code the server fails with.
    server.register(
      `/${Version.typeName}/${Version.method.version.name}`,
      (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        const code = String(call.metadata.get("containerd-namespace")[0]) as ErrorCode;
        callback(toGrpcStatus(new ContainerdError(code, `refused with ${code}`)));
      },
      () => Buffer.alloc(0),
      (bytes: Buffer) => bytes,
      "unary",
    );
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix://${path}`, ServerCredentials.createInsecure(), (error) =>
        error ? reject(error) : resolve(),
      ),
    );
    const client = createContainerdClient({ address: path });
    try {
      for (const code of errorCodes) {
        const error = await client.version
          .version({}, { namespace: code })
          .catch((caught: unknown) => caught);
        expect(isContainerdError(error, code), `${code}: ${String(error)}`).toBe(true);
        expect((error as Error).message).toContain(`refused with ${code}`);
      }
    } finally {
      client.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    }
  });
});
