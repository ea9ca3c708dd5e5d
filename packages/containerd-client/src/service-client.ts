import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import {
  type Client,
  type ClientDuplexStream,
  type CallOptions as GrpcCallOptions,
  Metadata,
} from "@grpc/grpc-js";
import { ContainerdError, toContainerdError } from "./errors.js";

/** gRPC metadata key carrying the namespace of every containerd call. */
export const namespaceHeader = "containerd-namespace";
/** gRPC metadata key carrying the lease resources are added to while it is set. */
export const leaseHeader = "containerd-lease";

/** Per-call options. */
export interface CallOptions {
  /** Namespace of this call (default: the client's). */
  namespace?: string;
  /** Lease that resources created by this call join. */
  lease?: string;
  /** Deadline in milliseconds from now (default: the client's for unary calls, none for streams). */
  timeoutMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
}

/** A bidirectional stream: send requests, read responses in order. */
export interface BidiStream<I extends DescMessage, O extends DescMessage>
  extends AsyncIterable<MessageShape<O>> {
  send(request: MessageInitShape<I>): void;
  /** Half-closes the request side. */
  close(): void;
  /** Sends one request and waits for the next response (lock-step protocols like Content.Write). */
  exchange(request: MessageInitShape<I>): Promise<MessageShape<O>>;
  /** Cancels the call. */
  cancel(): void;
}

type UnaryFunction<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: CallOptions,
) => Promise<MessageShape<O>>;
type ServerStreamingFunction<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: CallOptions,
) => AsyncIterable<MessageShape<O>>;
type BidiFunction<I extends DescMessage, O extends DescMessage> = (
  options?: CallOptions,
) => BidiStream<I, O>;

/** A typed client of one service: a function per RPC, named as protobuf-es names them. */
export type ServiceClient<S extends GenServiceMethods> = {
  [K in keyof S]: S[K]["methodKind"] extends "unary"
    ? UnaryFunction<S[K]["input"], S[K]["output"]>
    : S[K]["methodKind"] extends "server_streaming"
      ? ServerStreamingFunction<S[K]["input"], S[K]["output"]>
      : BidiFunction<S[K]["input"], S[K]["output"]>;
};

/** What a service client needs from its owner: the grpc-js client and the call defaults. */
export interface CallContext {
  client(): Client;
  /** Namespace when a call names none. */
  namespace: string;
  /** Deadline of unary calls when a call names none (ms; 0 = none). */
  timeoutMs: number;
  /** Describes the server in messages (`containerd at /run/containerd/containerd.sock`). */
  target: string;
}

function serializer<D extends DescMessage>(schema: D) {
  return (message: MessageInitShape<D>): Buffer =>
    Buffer.from(toBinary(schema, create(schema, message)));
}

function deserializer<D extends DescMessage>(schema: D) {
  return (bytes: Buffer): MessageShape<D> => fromBinary(schema, bytes);
}

function metadataOf(context: CallContext, options: CallOptions | undefined): Metadata {
  const metadata = new Metadata();
  metadata.set(namespaceHeader, options?.namespace ?? context.namespace);
  if (options?.lease !== undefined) metadata.set(leaseHeader, options.lease);
  return metadata;
}

function grpcOptions(options: CallOptions | undefined, defaultTimeoutMs: number): GrpcCallOptions {
  const timeoutMs = options?.timeoutMs ?? defaultTimeoutMs;
  return timeoutMs > 0 ? { deadline: Date.now() + timeoutMs } : {};
}

function onAbort(signal: AbortSignal | undefined, cancel: () => void): () => void {
  if (signal === undefined) return () => {};
  if (signal.aborted) {
    cancel();
    return () => {};
  }
  signal.addEventListener("abort", cancel, { once: true });
  return () => signal.removeEventListener("abort", cancel);
}

/** Builds a typed client for a service from its generated descriptor. */
export function createServiceClient<S extends GenServiceMethods>(
  service: GenService<S>,
  context: CallContext,
): ServiceClient<S> {
  const result: Record<string, unknown> = {};
  for (const [localName, method] of Object.entries(service.method) as [
    string,
    GenService<S>["method"][keyof S],
  ][]) {
    const path = `/${service.typeName}/${method.name}`;
    const rpc = `${service.name}.${method.name}`;
    const serialize = serializer(method.input);
    const deserialize = deserializer(method.output);
    if (method.methodKind === "unary") {
      result[localName] = (request: MessageInitShape<DescMessage>, options?: CallOptions) =>
        new Promise((resolve, reject) => {
          const call = context
            .client()
            .makeUnaryRequest(
              path,
              serialize,
              deserialize,
              request,
              metadataOf(context, options),
              grpcOptions(options, context.timeoutMs),
              (error, response) => {
                detach();
                if (error) reject(toContainerdError(error, rpc, context.target));
                else resolve(response);
              },
            );
          const detach = onAbort(options?.signal, () => call.cancel());
        });
    } else if (method.methodKind === "server_streaming") {
      result[localName] = (request: MessageInitShape<DescMessage>, options?: CallOptions) => ({
        async *[Symbol.asyncIterator]() {
          const call = context
            .client()
            .makeServerStreamRequest(
              path,
              serialize,
              deserialize,
              request,
              metadataOf(context, options),
              grpcOptions(options, 0),
            );
          const detach = onAbort(options?.signal, () => call.cancel());
          try {
            for await (const message of call) yield message as MessageShape<DescMessage>;
          } catch (error) {
            throw toContainerdError(error, rpc, context.target);
          } finally {
            detach();
            call.cancel();
          }
        },
      });
    } else {
      result[localName] = (options?: CallOptions) =>
        bidiStream(
          context
            .client()
            .makeBidiStreamRequest(
              path,
              serialize,
              deserialize,
              metadataOf(context, options),
              grpcOptions(options, 0),
            ),
          rpc,
          context.target,
          options?.signal,
        );
    }
  }
  return result as ServiceClient<S>;
}

function bidiStream<I extends DescMessage, O extends DescMessage>(
  call: ClientDuplexStream<MessageInitShape<I>, MessageShape<O>>,
  rpc: string,
  target: string,
  signal: AbortSignal | undefined,
): BidiStream<I, O> {
  const queued: MessageShape<O>[] = [];
  const waiting: {
    resolve: (value: MessageShape<O> | undefined) => void;
    reject: (error: Error) => void;
  }[] = [];
  let failure: ContainerdError | undefined;
  let ended = false;
  const detach = onAbort(signal, () => call.cancel());
  call.on("data", (message: MessageShape<O>) => {
    const waiter = waiting.shift();
    if (waiter) waiter.resolve(message);
    else queued.push(message);
  });
  call.on("error", (error: unknown) => {
    failure = toContainerdError(error, rpc, target);
    detach();
    for (const waiter of waiting.splice(0)) waiter.reject(failure);
  });
  call.on("end", () => {
    ended = true;
    detach();
    for (const waiter of waiting.splice(0)) waiter.resolve(undefined);
  });
  // grpc-js emits 'status' after 'end'; errors arrive through 'error'.
  const next = (): Promise<MessageShape<O> | undefined> => {
    const message = queued.shift();
    if (message !== undefined) return Promise.resolve(message);
    if (failure) return Promise.reject(failure);
    if (ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
  };
  return {
    send(request) {
      call.write(request);
    },
    close() {
      call.end();
    },
    cancel() {
      call.cancel();
    },
    async exchange(request) {
      if (failure) throw failure;
      call.write(request);
      const response = await next();
      if (response === undefined) {
        throw new ContainerdError("Unknown", `${rpc}: stream ended before a response`);
      }
      return response;
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const message = await next();
        if (message === undefined) return;
        yield message;
      }
    },
  };
}
