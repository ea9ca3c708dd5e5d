import { mkdir } from "node:fs/promises";
import { Health } from "@nix-snapshotter/api/health/v1";
import { Snapshots } from "@nix-snapshotter/api/snapshots/v1";
import { createNixStore } from "@nix-snapshotter/nix-store";
import {
  createHealthService,
  createSnapshotsService,
  createSnapshotter,
  migrateGoRoot,
  type Snapshotter,
} from "@nix-snapshotter/snapshotter";
import type { Logger } from "pino";
import { type DaemonConfig, parseMetricsAddress } from "./config.js";
import { type GrpcServer, listenGrpc } from "./grpc-server.js";
import { createImageService } from "./image-service.js";
import { type MetricsServer, Registry, serveMetrics } from "./metrics.js";
import { createDaemonMetrics } from "./rpc-metrics.js";
import { notifySystemd } from "./systemd-notify.js";

export interface DaemonOptions {
  config: DaemonConfig;
  logger: Logger;
  /** Environment (NOTIFY_SOCKET, Nix's variables); default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

export interface Daemon {
  config: DaemonConfig;
  snapshotter: Snapshotter;
  /** Bound metrics address (`host:port` with the real port, or a socket path), if enabled. */
  metricsAddress: string | undefined;
  /**
   * Graceful stop: health NOT_SERVING, no new connections, in-flight calls finish (up to
   * `graceMs`), then the metrics server, the image service and the snapshotter's database close.
   */
  close(graceMs?: number): Promise<void>;
}

/** Composes Nix, the snapshotter, the services and the servers, and tells systemd it is ready. */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const { config, logger } = options;
  const env = options.env ?? process.env;
  logger.info(
    {
      root: config.root,
      address: config.address,
      mountMode: config.mountMode,
      realiseTimeoutMs: config.realiseTimeoutMs,
    },
    "starting nix-snapshotter",
  );

  await mkdir(config.root, { recursive: true, mode: 0o700 });
  const registry = new Registry();
  const metrics = createDaemonMetrics(registry);
  const nixStore = createNixStore({
    storeDir: config.storeDir,
    ...(config.gcRootsDir ? { gcRootsDir: config.gcRootsDir } : {}),
    ...(config.externalBuilder ? { externalBuilder: config.externalBuilder } : {}),
    logger: logger.child({ component: "nix" }),
    env,
  });
  const nixStorePort = metrics.observedNixStore(nixStore);
  // A root left by the Go nix-snapshotter is taken over in place (or an interrupted take-over
  // finished) before the snapshotter opens it; a root it cannot take over stops the start.
  await migrateGoRoot({
    root: config.root,
    nixStore: nixStorePort,
    storeDir: config.storeDir,
    logger: logger.child({ component: "migration" }),
  });
  const snapshotter = await createSnapshotter({
    root: config.root,
    logger: logger.child({ component: "snapshotter" }),
    mountMode: config.mountMode,
    nixStore: nixStorePort,
    storeDir: config.storeDir,
    fuseOverlayfs: config.fuseOverlayfs,
    ...(config.realiseTimeoutMs > 0 ? { realiseTimeoutMs: config.realiseTimeoutMs } : {}),
  });
  metrics.snapshotsByKind(snapshotter);

  let grpc: GrpcServer | undefined;
  let metricsServer: MetricsServer | undefined;
  let imageService: Awaited<ReturnType<typeof createImageService>>;
  try {
    imageService = await createImageService(
      config,
      logger.child({ component: "image-service" }),
      nixStore,
    );
    const health = createHealthService([
      Snapshots.typeName,
      ...(imageService ? [imageService.serviceName] : []),
    ]);
    const snapshotsService = createSnapshotsService(snapshotter, {
      logger: logger.child({ component: "grpc" }),
      // The gRPC server below speaks protobuf's binary format only (no +json content type).
      binaryResponses: true,
    });
    grpc = await listenGrpc({
      address: config.address,
      logger,
      observe: metrics.observe,
      routes: (router) => {
        router.service(Snapshots, snapshotsService);
        router.service(Health, health.impl);
        imageService?.register(router);
      },
    });
    const metricsAddress = parseMetricsAddress(config.metricsAddress);
    if (metricsAddress) {
      metricsServer = await serveMetrics(registry, metricsAddress);
      logger.info({ address: metricsServer.address }, "serving metrics");
    }
    logger.info({ address: config.address }, "serving");
    await notifySystemd(["--ready", `--status=serving on ${config.address}`], { env }).catch(
      (error: unknown) => logger.error({ err: error }, "cannot notify systemd"),
    );

    let closing: Promise<void> | undefined;
    return {
      config,
      snapshotter,
      metricsAddress: metricsServer?.address,
      close(graceMs) {
        closing ??= (async () => {
          logger.info("shutting down");
          await notifySystemd(["STOPPING=1"], { env }).catch((error: unknown) =>
            logger.warn({ err: error }, "cannot notify systemd"),
          );
          health.shutdown();
          await grpc?.close(graceMs);
          await metricsServer?.close();
          await imageService?.close();
          await snapshotter.close();
          logger.info("stopped");
        })();
        return closing;
      },
    };
  } catch (error) {
    await grpc?.close(0).catch(() => {});
    await metricsServer?.close().catch(() => {});
    await snapshotter.close().catch(() => {});
    throw error;
  }
}
