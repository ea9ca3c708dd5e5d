import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { Server, ServerCredentials, type sendUnaryData } from "@grpc/grpc-js";
import {
  ImageService,
  ImageStatusRequestSchema,
  ListImagesRequestSchema,
  PullImageRequestSchema,
  RemoveImageRequestSchema,
} from "@nix-snapshotter/api/cri/v1";
import { type ContainerdClient, toGrpcStatus } from "@nix-snapshotter/containerd-client";
import { CodedError, type ErrorCode, errorCodes } from "@nix-snapshotter/errdefs";
import { fromConnectError } from "@nix-snapshotter/errdefs/connect";
import type { NixStore } from "@nix-snapshotter/nix-store";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createImageService } from "./image-service.js";
import { hostileReferences } from "./testing/hostile-references.js";

/** A NixStore that records every use: hostile input must never reach it. */
function recordingNixStore(calls: string[]): NixStore {
  return new Proxy({ storeDir: "/nix/store", gcRootsDir: "/nonexistent/gcroots" } as NixStore, {
    get(target, property) {
      if (property === "storeDir" || property === "gcRootsDir") return target[property];
      if (property === "then") return undefined;
      return (...args: unknown[]) => {
        calls.push(`${String(property)}(${JSON.stringify(args)})`);
        throw new Error(`nix store used: ${String(property)}`);
      };
    },
  });
}

function context(): HandlerContext {
  const controller = new AbortController();
  return {
    method: ImageService.method.pullImage,
    service: ImageService,
    requestMethod: "POST",
    url: "http://localhost/",
    peer: { addr: "" },
    signal: controller.signal,
    timeoutMs: () => undefined,
    requestHeader: new Headers(),
    responseHeader: new Headers(),
    responseTrailer: new Headers(),
    values: createContextValues(),
  } as unknown as HandlerContext;
}

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const caught = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(caught).toBeInstanceOf(ConnectError);
  return caught as ConnectError;
}

describe("CRI image service without containerd", () => {
  let dir: string;
  let calls: string[];
  let service: ReturnType<typeof createImageService>;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "cri-image-service-"));
    calls = [];
    service = createImageService({
      containerdAddress: join(dir, "containerd.sock"),
      nixStore: recordingNixStore(calls),
      logger: pino({ level: "silent" }),
      snapshotterRoot: dir,
    });
  });
  afterEach(() => {
    service.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(hostileReferences)(
    "refuses %j in PullImage, ImageStatus and RemoveImage without touching Nix or containerd",
    async (reference) => {
      const spec = { image: reference };
      const pull = await failure(
        Promise.resolve(
          service.impl.pullImage(create(PullImageRequestSchema, { image: spec }), context()),
        ),
      );
      expect(pull.code).toBe(Code.InvalidArgument);
      const status = await failure(
        Promise.resolve(
          service.impl.imageStatus(create(ImageStatusRequestSchema, { image: spec }), context()),
        ),
      );
      expect(status.code).toBe(Code.InvalidArgument);
      const remove = await failure(
        Promise.resolve(
          service.impl.removeImage(create(RemoveImageRequestSchema, { image: spec }), context()),
        ),
      );
      expect(remove.code).toBe(Code.InvalidArgument);
      // containerd is absent: had the service called it, the code would be Unavailable.
      expect(calls).toEqual([]);
    },
  );

  it("answers Unavailable, naming containerd's socket, for forwarded calls", async () => {
    const error = await failure(
      Promise.resolve(service.impl.listImages(create(ListImagesRequestSchema), context())),
    );
    expect(error.code).toBe(Code.Unavailable);
    expect(error.rawMessage).toContain(`containerd at ${join(dir, "containerd.sock")}`);
    const pull = await failure(
      Promise.resolve(
        service.impl.pullImage(
          create(PullImageRequestSchema, {
            image: { image: "nix:0/nix/store/0c8x3v4aw9lpqyhjxnbss3mrdr1hw1mm-nix-image-a.tar" },
          }),
          context(),
        ),
      ),
    );
    expect(pull.code).toBe(Code.Unavailable);
    // A valid nix:0 pull asks containerd first: nothing is realised while it is away.
    expect(calls).toEqual([]);
  });

  it("logs a failed call once, at warn, with its code and the error under err (pino's serializer)", async () => {
    const lines: string[] = [];
    const logged = createImageService({
      containerdAddress: join(dir, "containerd.sock"),
      nixStore: recordingNixStore(calls),
      logger: pino({ level: "debug" }, { write: (line: string) => void lines.push(line) }),
      snapshotterRoot: dir,
    });
    try {
      const pull = await failure(
        Promise.resolve(
          logged.impl.pullImage(
            create(PullImageRequestSchema, { image: { image: "nix:0/etc/passwd" } }),
            context(),
          ),
        ),
      );
      expect(pull.code).toBe(Code.InvalidArgument);
    } finally {
      logged.close();
    }
    const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const failures = entries.filter((entry) => (entry.level as number) >= 40);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ level: 40, rpc: "PullImage", code: "InvalidArgument" });
    const err = failures[0]!.err as { type: string; message: string; stack: string };
    expect(err.message).toContain("/etc/passwd");
    expect(typeof err.type).toBe("string");
    expect(err.stack).toMatch(/\n\s+at /);
  });

  it("answers ImageFsInfo while containerd is away, for the snapshotter root and the store", async () => {
    const response = await service.impl.imageFsInfo({} as never, context());
    const filesystems = (response as { imageFilesystems: { fsId?: { mountpoint: string } }[] })
      .imageFilesystems;
    expect(filesystems.map((usage) => usage.fsId?.mountpoint)).toEqual([dir, "/nix/store"]);
    for (const usage of filesystems as { usedBytes?: { value: bigint } }[]) {
      expect(usage.usedBytes?.value).toBeGreaterThan(0n);
    }
  });
});

describe("PullImage of a nix:0 reference, cancelled", () => {
  const reference = "nix:0/nix/store/0c8x3v4aw9lpqyhjxnbss3mrdr1hw1mm-nix-image-a.tar";

  /** containerd's CRI knows no image; Nix realises until its signal aborts. */
  function setup() {
    const realiseSignals: AbortSignal[] = [];
    const cri = { imageStatus: async () => ({ image: undefined }) };
    const containerd = {
      withNamespace: () => containerd,
      service: () => cri,
      close() {},
    } as unknown as ContainerdClient;
    const nixStore = {
      storeDir: "/nix/store",
      gcRootsDir: "/nonexistent/gcroots",
      realise(_paths: readonly string[], options: { signal?: AbortSignal }) {
        const signal = options.signal!;
        realiseSignals.push(signal);
        return new Promise((_, reject) =>
          signal.addEventListener("abort", () => reject(new Error("nix killed")), { once: true }),
        );
      },
    } as unknown as NixStore;
    const service = createImageService({
      containerdAddress: "/nonexistent/containerd.sock",
      containerd,
      nixStore,
      logger: pino({ level: "silent" }),
      snapshotterRoot: "/nonexistent",
    });
    return { service, realiseSignals };
  }

  const until = async (condition: () => boolean) => {
    while (!condition()) await new Promise((resolve) => setImmediate(resolve));
  };

  it("stops the shared realise only when every caller waiting on it has cancelled", async () => {
    const { service, realiseSignals } = setup();
    const first = new AbortController();
    const second = new AbortController();
    const a = service.pullNixImage(reference, { signal: first.signal }).catch((e: unknown) => e);
    const b = service.pullNixImage(reference, { signal: second.signal }).catch((e: unknown) => e);
    await until(() => realiseSignals.length > 0);
    first.abort();
    expect(await a).toMatchObject({ code: "Canceled" });
    // One pull for both callers; the second still waits on it.
    expect(realiseSignals.length).toBe(1);
    expect(realiseSignals[0]?.aborted).toBe(false);
    second.abort();
    expect(await b).toMatchObject({ code: "Canceled" });
    expect(realiseSignals[0]?.aborted).toBe(true);
    // The next pull starts afresh.
    const third = new AbortController();
    const c = service.pullNixImage(reference, { signal: third.signal }).catch((e: unknown) => e);
    await until(() => realiseSignals.length > 1);
    expect(realiseSignals[1]?.aborted).toBe(false);
    third.abort();
    expect(await c).toMatchObject({ code: "Canceled" });
    service.close();
  });

  it("answers PullImage with Canceled when the call's signal aborts", async () => {
    const { service, realiseSignals } = setup();
    const controller = new AbortController();
    const call = { ...context(), signal: controller.signal } as HandlerContext;
    const pending = failure(
      Promise.resolve(
        service.impl.pullImage(
          create(PullImageRequestSchema, { image: { image: reference } }),
          call,
        ),
      ),
    );
    await until(() => realiseSignals.length > 0);
    controller.abort();
    expect((await pending).code).toBe(Code.Canceled);
    expect(realiseSignals[0]?.aborted).toBe(true);
    service.close();
  });
});

describe("CRI image service errors", () => {
  it("answers each code containerd's CRI fails with, and the kubelet's side reads it back", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cri-image-service-codes-"));
    const socket = join(dir, "containerd.sock");
    // containerd's CRI ImageService over grpc-js: ListImages fails with the next code in turn.
    const pending = [...errorCodes];
    const server = new Server();
    server.register(
      `/${ImageService.typeName}/${ImageService.method.listImages.name}`,
      (_call: unknown, callback: sendUnaryData<unknown>) => {
        const code = pending.shift() ?? "Internal";
        callback(toGrpcStatus(new CodedError(code, `containerd refused with ${code}`)));
      },
      () => Buffer.alloc(0),
      (bytes: Buffer) => bytes,
      "unary",
    );
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix://${socket}`, ServerCredentials.createInsecure(), (error) =>
        error ? reject(error) : resolve(),
      ),
    );
    const service = createImageService({
      containerdAddress: socket,
      nixStore: recordingNixStore([]),
      logger: pino({ level: "silent" }),
      snapshotterRoot: dir,
    });
    try {
      for (const code of errorCodes) {
        const error = await failure(
          Promise.resolve(service.impl.listImages(create(ListImagesRequestSchema), context())),
        );
        expect(Code[error.code], error.rawMessage).toBe(code);
        expect(error.rawMessage).toMatch(/^ListImages: /);
        expect(error.rawMessage).toContain(`containerd refused with ${code}`);
        const back = fromConnectError(error);
        expect(back.code).toBe(code satisfies ErrorCode);
        expect(back.message).toBe(error.rawMessage);
      }
    } finally {
      service.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
