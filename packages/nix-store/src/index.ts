export type { NixStoreErrorCode, NixStoreErrorOptions } from "./errors.js";
export { isNixStoreError, NixStoreError } from "./errors.js";
export type { GcRootLeftover, GcRootSet, GcRoots } from "./gc-roots.js";
export {
  CRASH_POINT_ENV,
  createGcRoots,
  DEFAULT_NIX_STATE_DIR,
  defaultGcRootsDir,
  GC_ROOTS_DIR_NAME,
  validateRootOwner,
} from "./gc-roots.js";
export type { Logger } from "./logger.js";
export { silentLogger } from "./logger.js";
export type { RealiseProgress } from "./nix-log.js";
export type {
  NixStore,
  NixStoreOptions,
  PathInfo,
  RealiseOptions,
  RealiseResult,
} from "./nix-store.js";
export { createNixStore } from "./nix-store.js";
export type { NixFeatures, NixVersion } from "./nix-version.js";
export { nixFeatures, parseNixVersion } from "./nix-version.js";
export type { SpawnHook } from "./run-process.js";
export { defaultSpawn } from "./run-process.js";
export type { StorePath, StorePathOptions } from "./store-path.js";
export {
  checkStorePathName,
  DEFAULT_STORE_DIR,
  isStorePath,
  isValidStoreDir,
  NIX_BASE32_ALPHABET,
  parseStorePath,
  parseStorePaths,
  STORE_PATH_HASH_LENGTH,
  STORE_PATH_MAX_NAME_LENGTH,
  storePathOf,
  validateStoreDir,
} from "./store-path.js";
