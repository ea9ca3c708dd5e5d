export type {
  BoltBucket,
  BoltDatabase,
  BoltEntry,
  BoltMeta,
  ReadBoltFileOptions,
} from "./bolt/bolt-file.js";
export { BoltFormatError, parseBolt, readBoltFile } from "./bolt/bolt-file.js";
export {
  dateFromTimestampParts,
  nanosecondsOf,
  PreciseDate,
  timestampParts,
} from "./clock.js";
export type { SnapshotterErrorOptions } from "./errors.js";
export { ErrorCode, SnapshotterError } from "./errors.js";
export type { FieldAdaptor, Filter } from "./filters.js";
export { infoAdaptor, parseFilters } from "./filters.js";
export { defaultGcRootOwnerPrefix } from "./gc-root-owner.js";
export type {
  GoMetaStore,
  GoSnapshot,
  MigrateGoRootOptions,
  MigrationResult,
  MigrationStep,
} from "./migration/index.js";
export { migrateGoRoot, migrationSteps, readGoMetaStore } from "./migration/index.js";
export type { MountModeStrategy, NixMountMode } from "./mount-modes/index.js";
export {
  defaultMountMode,
  mountModeNamed,
  mountModes,
  nixMountModes,
} from "./mount-modes/index.js";
export type { OverlaySettings, SnapshotLayout } from "./mount-options.js";
export { overlayMounts, storePathMounts } from "./mount-options.js";
export type { NixLayerRequest } from "./nix-labels.js";
export {
  legacyNixStoreLabelPrefix,
  nixClosureLabel,
  nixLayerLabel,
  nixStorePathLabelPrefix,
  parseClosureStorePaths,
  parseNixLabels,
} from "./nix-labels.js";
export { nixStorePortFrom } from "./nix-store-adapter.js";
export type { NixStorePort, RootLeftover } from "./nix-store-port.js";
export type {
  HealthService,
  LabelLimits,
  RemoteSnapshotterOptions,
  SnapshotsServiceOptions,
} from "./service/index.js";
export {
  checkLabelLimits,
  createHealthService,
  createRemoteSnapshotter,
  createSnapshotsService,
  defaultLabelLimits,
  infoFromMessage,
  infoToMessage,
  maxListMessageBytes,
  mountToMessage,
  ServingStatus,
  toConnectError,
  usageToMessage,
} from "./service/index.js";
export { createSnapshotter, maxLabelSize } from "./snapshotter.js";
export type {
  Info,
  Mount,
  MountMode,
  SnapshotOptions,
  Snapshotter,
  SnapshotterOptions,
  Usage,
  WalkFunction,
} from "./types.js";
export { Kind } from "./types.js";
