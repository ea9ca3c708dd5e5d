import { mkdir } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { StoreFileSystem } from "@nix-snapshotter/image-builder";
import type { Logger } from "@nix-snapshotter/nix-store";
import type { RegistryConfig } from "./config.js";
import { createImageService, createNixSteps, type NixSteps } from "./image-service.js";
import { createImageStore } from "./image-store.js";
import { createMetrics } from "./metrics.js";
import { createRegistryServer } from "./server.js";

export interface StartRegistryOptions {
  config: RegistryConfig;
  logger: Logger;
  /** Replaces the Nix steps (tests). */
  nix?: NixSteps;
  /** Replaces the store's file system (tests). */
  fileSystem?: StoreFileSystem;
}

export interface RunningRegistry {
  /** `host:port` actually bound. */
  address: string;
  port: number;
  close(): Promise<void>;
}

/** Opens the storage (removing what a crash left), then listens. */
export async function startRegistry(options: StartRegistryOptions): Promise<RunningRegistry> {
  const { config, logger } = options;
  const metrics = createMetrics();
  const store = createImageStore({
    storagePath: config.storagePath,
    gcRootsDir: config.gcRootsDir,
    maxImages: config.maxImages,
    logger,
    ...(config.binaryCache ? { binaryCacheDir: join(config.storagePath, "binary-cache") } : {}),
  });
  await store.open();
  const binaryCacheDir = join(config.storagePath, "binary-cache");
  if (config.binaryCache) await mkdir(binaryCacheDir, { recursive: true });
  const service = createImageService({
    store,
    nix:
      options.nix ??
      createNixSteps(
        {
          pkgsPath: config.pkgsPath,
          gitUrl: config.pkgsRepo,
          nixBin: config.nixBin,
          storeDir: config.storeDir,
        },
        config.binaryCache
          ? { dir: binaryCacheDir, secretKeyFile: config.binaryCacheSecretKeyFile }
          : undefined,
        config.defaultBranch,
      ),
    logger,
    nixTimeoutSeconds: config.nixTimeout,
    platforms: config.platforms,
    annotationForm: config.annotationForm,
    revision: config.revision,
    gitTags: config.pkgsRepo !== "",
    binaryCache: config.binaryCache,
    revisionTtlSeconds: config.revisionTtl,
    maxConcurrentBuilds: config.maxConcurrentBuilds,
    storeDir: config.storeDir,
    onEvent: (event) => metrics.event(event),
    ...(options.fileSystem ? { fileSystem: options.fileSystem } : {}),
  });
  metrics.gauge("nix_registry_images", "Images in the cache", () => store.size());
  metrics.gauge("nix_registry_builds_running", "Image builds running", () => service.running());
  const server = createRegistryServer({
    service,
    store,
    logger,
    metrics,
    defaultPlatform: config.platforms[0]!,
    nameLimits: {
      maxComponents: config.maxComponents,
      maxComponentLength: config.maxComponentLength,
    },
    maxUrlLength: config.maxUrlLength,
    maxRequestsPerClient: config.maxRequestsPerClient,
    maxHeaderBytes: config.maxHeaderBytes,
    requestTimeoutMs: (config.nixTimeout + 60) * 1000,
    metricsEnabled: config.metrics,
    binaryCacheDir: config.binaryCache ? binaryCacheDir : undefined,
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const address = `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`;
  logger.info(
    {
      address,
      pkgsPath: config.pkgsPath,
      pkgsRepo: config.pkgsRepo,
      storagePath: config.storagePath,
    },
    "listening",
  );
  return {
    address,
    port: bound.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
