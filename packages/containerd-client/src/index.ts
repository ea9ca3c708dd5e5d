export { chainIds } from "./chain-id.js";
export type { ContainerdClient, ContainerdClientOptions, ContainerdServices } from "./client.js";
export { createContainerdClient, socketPath, validateNamespace } from "./client.js";
export type { ContainerdErrorCode, ContainerdErrorOptions } from "./errors.js";
export {
  ContainerdError,
  isContainerdError,
  toContainerdError,
  toGrpcStatus,
} from "./errors.js";
export type { ImportArchiveOptions, ImportEvent, ImportResult } from "./import-archive.js";
export { imageNamesOf, importArchive, writeContent } from "./import-archive.js";
export { gcContentLabel, gcSnapshotLabel, Label, snapshotLabelsOf } from "./labels.js";
export type { BidiStream, CallOptions, ServiceClient } from "./service-client.js";
export { leaseHeader, namespaceHeader } from "./service-client.js";
