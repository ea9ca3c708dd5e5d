export { toConnectError } from "@nix-snapshotter/errdefs/connect";
export { infoFromMessage, infoToMessage, mountToMessage, usageToMessage } from "./convert.js";
export type { HealthService } from "./health-service.js";
export { createHealthService, ServingStatus } from "./health-service.js";
export type { LabelLimits } from "./label-limits.js";
export {
  checkLabelLimits,
  defaultLabelLimits,
  labelBytes,
  labelsAfterUpdate,
} from "./label-limits.js";
export type { RemoteSnapshotterOptions } from "./remote-snapshotter.js";
export { createRemoteSnapshotter } from "./remote-snapshotter.js";
export type { SnapshotsServiceOptions } from "./snapshots-service.js";
export { createSnapshotsService, maxListMessageBytes } from "./snapshots-service.js";
