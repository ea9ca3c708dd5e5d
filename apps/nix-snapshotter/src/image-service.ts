import { ImageService } from "@nix-snapshotter/api/cri/v1";
import { createImageService as createCriImageService } from "@nix-snapshotter/cri-image-service";
import type { NixStore } from "@nix-snapshotter/nix-store";
import type { Logger } from "pino";
import type { DaemonConfig } from "./config.js";
import type { GrpcRouter } from "./grpc-server.js";

/** What the daemon needs from the CRI image service: routes on its socket, and a way to stop. */
export interface ImageServiceHandle {
  /** Full gRPC service name, for the health service (`runtime.v1.ImageService`). */
  serviceName: string;
  register(router: GrpcRouter): void;
  close(): Promise<void>;
}

/**
 * `[image_service]`: when `enable` is true, the CRI ImageService (`@nix-snapshotter/cri-image-service`)
 * is served on the daemon's socket, forwarding to containerd's CRI at `containerd_address` and
 * resolving `nix:0` references through Nix, unpacking through this snapshotter (`nix`).
 */
export async function createImageService(
  config: DaemonConfig,
  logger: Logger,
  nixStore: NixStore,
): Promise<ImageServiceHandle | undefined> {
  if (!config.imageService.enable) return undefined;
  const service = createCriImageService({
    containerdAddress: config.imageService.containerdAddress,
    nixStore,
    logger,
    snapshotter: "nix",
    snapshotterRoot: config.root,
    ...(config.realiseTimeoutMs > 0 ? { realiseTimeoutMs: config.realiseTimeoutMs } : {}),
  });
  logger.info(
    { containerdAddress: config.imageService.containerdAddress },
    "serving the CRI ImageService",
  );
  return {
    serviceName: ImageService.typeName,
    register(router) {
      router.service(ImageService, service.impl);
    },
    async close() {
      service.close();
    },
  };
}
