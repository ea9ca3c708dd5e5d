import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  HealthCheckResponseSchema,
  HealthListResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@nix-snapshotter/api/health/v1";

export { ServingStatus };

/** The standard `grpc.health.v1.Health` service with settable statuses per service name. */
export interface HealthService {
  impl: ServiceImpl<typeof Health>;
  /** Sets the status of `service` (`""` is the server as a whole) and wakes its watchers. */
  setStatus(service: string, status: ServingStatus): void;
  /** Marks every known service NOT_SERVING (at shutdown) and ends every Watch stream. */
  shutdown(): void;
}

/**
 * Creates a health service. Services start SERVING for each name in `services` and for `""`;
 * Check of an unknown name is NotFound, Watch of an unknown name streams SERVICE_UNKNOWN, as the
 * gRPC health-checking protocol says.
 */
export function createHealthService(services: readonly string[] = []): HealthService {
  const statuses = new Map<string, ServingStatus>([["", ServingStatus.SERVING]]);
  for (const service of services) statuses.set(service, ServingStatus.SERVING);
  const watchers = new Set<() => void>();
  let closed = false;

  const wake = () => {
    for (const watcher of [...watchers]) watcher();
  };

  const impl: ServiceImpl<typeof Health> = {
    check(request) {
      const status = statuses.get(request.service);
      if (status === undefined) {
        throw new ConnectError(`unknown service "${request.service}"`, Code.NotFound);
      }
      return create(HealthCheckResponseSchema, { status });
    },

    list() {
      const result: Record<
        string,
        ReturnType<typeof create<typeof HealthCheckResponseSchema>>
      > = {};
      for (const [service, status] of statuses) {
        result[service] = create(HealthCheckResponseSchema, { status });
      }
      return create(HealthListResponseSchema, { statuses: result });
    },

    async *watch(request, context: HandlerContext) {
      let last: ServingStatus | undefined;
      for (;;) {
        const status = statuses.get(request.service) ?? ServingStatus.SERVICE_UNKNOWN;
        if (status !== last) {
          last = status;
          yield create(HealthCheckResponseSchema, { status });
          continue;
        }
        if (closed || context.signal.aborted) return;
        await new Promise<void>((resolve) => {
          const done = () => {
            watchers.delete(done);
            context.signal.removeEventListener("abort", done);
            resolve();
          };
          watchers.add(done);
          context.signal.addEventListener("abort", done);
        });
      }
    },
  };

  return {
    impl,
    setStatus(service, status) {
      statuses.set(service, status);
      wake();
    },
    shutdown() {
      for (const service of statuses.keys()) statuses.set(service, ServingStatus.NOT_SERVING);
      closed = true;
      wake();
    },
  };
}
