export type {
  ConformanceContext,
  ConformanceFactory,
  ConformanceOptions,
  ConformanceTarget,
} from "./conformance.js";
export { runConformanceSuite } from "./conformance.js";
export type { FakeNixStoreOptions } from "./fake-nix-store.js";
export { FakeNixStore, FakeNixStoreError } from "./fake-nix-store.js";
export { buildGoProgram, debianGoPath, goProgramsUnavailable } from "./go-program.js";
export { compactOverlayOptions, mountAll, unmountAll } from "./mount.js";
