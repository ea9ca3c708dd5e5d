// The registry's test harness, exported as `nix-registry/testing` for its e2e tests and bench/.
export type { Started } from "./processes.js";
export { get, registryEntry } from "./processes.js";
export type { RegistryProcess, RegistryProcessOptions } from "./registry-process.js";
export { OFFLINE_NIX_CONFIG, startRegistryProcess } from "./registry-process.js";
export type { StandInSet } from "./stand-in-set.js";
export { createStandInSet } from "./stand-in-set.js";
