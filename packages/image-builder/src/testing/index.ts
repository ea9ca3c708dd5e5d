export { withLayerAnnotations } from "./hostile-image.js";
export type {
  RegistryAuth,
  RegistryRequest,
  StartRegistryOptions,
  TestRegistry,
  TokenRequest,
} from "./registry.js";
export { DOCKER_REGISTRY_BINARY, startRegistry } from "./registry.js";
export type { RegistryPool } from "./registry-tools.js";
export {
  createRegistryPool,
  missingRegistryPrograms,
  skopeoRawManifest,
} from "./registry-tools.js";
