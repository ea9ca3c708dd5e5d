import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { Client, connectivityState, credentials } from "@grpc/grpc-js";
import { Content } from "@nix-snapshotter/api/content/v1";
import { Diff } from "@nix-snapshotter/api/diff/v1";
import { Images } from "@nix-snapshotter/api/images/v1";
import { Leases } from "@nix-snapshotter/api/leases/v1";
import { Namespaces } from "@nix-snapshotter/api/namespaces/v1";
import { Snapshots } from "@nix-snapshotter/api/snapshots/v1";
import { Version } from "@nix-snapshotter/api/version/v1";
import { ContainerdError } from "./errors.js";
import { type CallContext, createServiceClient, type ServiceClient } from "./service-client.js";

type MethodsOf<S> = S extends { method: infer M } ? { [K in keyof M]: M[K] } : never;

/** Typed clients of containerd's services. */
export interface ContainerdServices {
  content: ServiceClient<MethodsOf<typeof Content>>;
  images: ServiceClient<MethodsOf<typeof Images>>;
  leases: ServiceClient<MethodsOf<typeof Leases>>;
  diff: ServiceClient<MethodsOf<typeof Diff>>;
  snapshots: ServiceClient<MethodsOf<typeof Snapshots>>;
  namespaces: ServiceClient<MethodsOf<typeof Namespaces>>;
  version: ServiceClient<MethodsOf<typeof Version>>;
}

export interface ContainerdClientOptions {
  /** containerd's socket: `/run/containerd/containerd.sock` or `unix:///run/...`. */
  address: string;
  /** Namespace of calls that name none. Default `default`. */
  namespace?: string;
  /** Deadline of unary calls in milliseconds (0 = none). Default 30 000. */
  timeoutMs?: number;
  /** First reconnect delay after containerd went away (ms). Default 100. */
  initialReconnectBackoffMs?: number;
  /** Longest reconnect delay (ms); the channel retries for ever. Default 2 000. */
  maxReconnectBackoffMs?: number;
}

/** A connection to containerd. One channel, reconnecting on its own, shared by every view. */
export interface ContainerdClient extends ContainerdServices {
  /** The socket path. */
  readonly address: string;
  readonly namespace: string;
  /** A view of the same connection whose calls default to another namespace. */
  withNamespace(namespace: string): ContainerdClient;
  /**
   * Waits until containerd answers (connects, then calls Version). Fails with `Unavailable` when
   * it does not within `timeoutMs`.
   */
  waitForReady(timeoutMs: number): Promise<void>;
  /** `Version.Version`: containerd's version and revision. */
  serverVersion(): Promise<{ version: string; revision: string }>;
  /**
   * A typed client for any other service served on containerd's socket (containerd's CRI plugin:
   * `runtime.v1.ImageService`, `runtime.v1.RuntimeService`), sharing the channel and defaults.
   */
  service<S extends GenServiceMethods>(service: GenService<S>): ServiceClient<S>;
  /** Closes the channel (every view). */
  close(): void;
}

/** The socket path of an address given as a path or a `unix://` URL. */
export function socketPath(address: string): string {
  let path = address;
  if (path.startsWith("unix://")) path = path.slice("unix://".length);
  else if (path.startsWith("unix:")) path = path.slice("unix:".length);
  if (!path.startsWith("/")) {
    throw new ContainerdError(
      "InvalidArgument",
      `containerd address "${address}": expected an absolute unix socket path`,
    );
  }
  return path;
}

const namespacePattern = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

/** Checks a namespace name as containerd does (letters, digits, `._-` between them, <= 76). */
export function validateNamespace(namespace: string): string {
  if (namespace.length > 76 || !namespacePattern.test(namespace)) {
    throw new ContainerdError(
      "InvalidArgument",
      `namespace "${namespace}": must be letters and digits separated by ".", "_" or "-", at most 76 characters`,
    );
  }
  return namespace;
}

/** Creates a client for containerd at `options.address`. Connecting is lazy. */
export function createContainerdClient(options: ContainerdClientOptions): ContainerdClient {
  const address = socketPath(options.address);
  const namespace = validateNamespace(options.namespace ?? "default");
  const grpcClient = new Client(`unix://${address}`, credentials.createInsecure(), {
    "grpc.initial_reconnect_backoff_ms": options.initialReconnectBackoffMs ?? 100,
    "grpc.max_reconnect_backoff_ms": options.maxReconnectBackoffMs ?? 2_000,
    "grpc.max_receive_message_length": 16 * 1024 * 1024,
    "grpc.max_send_message_length": 16 * 1024 * 1024,
    // containerd is local: no DNS, no keepalive pings (grpc-go punishes frequent ones).
    "grpc.enable_retries": 1,
  });
  let closed = false;
  const view = (viewNamespace: string): ContainerdClient => {
    const context: CallContext = {
      client() {
        if (closed) {
          throw new ContainerdError("Canceled", `client of containerd at ${address} is closed`);
        }
        return grpcClient;
      },
      namespace: viewNamespace,
      timeoutMs: options.timeoutMs ?? 30_000,
      target: `containerd at ${address}`,
    };
    const services: ContainerdServices = {
      content: createServiceClient(Content, context),
      images: createServiceClient(Images, context),
      leases: createServiceClient(Leases, context),
      diff: createServiceClient(Diff, context),
      snapshots: createServiceClient(Snapshots, context),
      namespaces: createServiceClient(Namespaces, context),
      version: createServiceClient(Version, context),
    };
    const serverVersion = async () => {
      const response = await services.version.version({});
      return { version: response.version, revision: response.revision };
    };
    return {
      ...services,
      address,
      namespace: viewNamespace,
      withNamespace: (next) => view(validateNamespace(next)),
      service: (descriptor) => createServiceClient(descriptor, context),
      serverVersion,
      async waitForReady(timeoutMs) {
        const deadline = Date.now() + timeoutMs;
        let last: unknown;
        for (;;) {
          try {
            await new Promise<void>((resolve, reject) =>
              grpcClient.waitForReady(Math.max(deadline, Date.now() + 1), (error) =>
                error ? reject(error) : resolve(),
              ),
            );
            await services.version.version({}, { timeoutMs: Math.max(1, deadline - Date.now()) });
            return;
          } catch (error) {
            last = error;
          }
          if (Date.now() >= deadline) break;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const state = grpcClient.getChannel().getConnectivityState(false);
        throw new ContainerdError(
          "Unavailable",
          `containerd at ${address} is not reachable (channel ${connectivityState[state]}): ${(last as Error)?.message ?? "no answer"}`,
          { cause: last },
        );
      },
      close() {
        if (closed) return;
        closed = true;
        grpcClient.close();
      },
    };
  };
  return view(namespace);
}
