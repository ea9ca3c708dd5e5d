import type { ConnectRouter } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { DaemonConfig } from "./config.js";

/** What the daemon needs from the CRI image service: routes on its socket, and a way to stop. */
export interface ImageServiceHandle {
  /** Full gRPC service name, for the health service (`runtime.v1.ImageService`). */
  serviceName: string;
  register(router: ConnectRouter): void;
  close(): Promise<void>;
}

/**
 * The seam where `[image_service]` is wired (issue 6, `@nix-snapshotter/cri-image-service`):
 * return a handle when `config.imageService.enable` is true, built with
 * `config.imageService.containerdAddress` and `config.storeDir`. Until that package provides the
 * service, an enabled image service is reported once at warn level and not served; the
 * snapshotter works without it.
 */
export async function createImageService(
  config: DaemonConfig,
  logger: Logger,
): Promise<ImageServiceHandle | undefined> {
  if (!config.imageService.enable) return undefined;
  logger.warn(
    { containerdAddress: config.imageService.containerdAddress },
    "image_service.enable is true but this build has no CRI image service yet; serving the snapshotter only",
  );
  return undefined;
}
