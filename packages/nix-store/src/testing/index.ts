export type { BinaryCache, BinaryCacheOptions } from "./binary-cache.js";
export { serveBinaryCache, startBinaryCache } from "./binary-cache.js";
export type {
  BusyboxFixture,
  NixFixtures,
  NixFixturesOptions,
  RedisFixture,
  ScriptFixture,
  SyntheticClosure,
  SyntheticClosureOptions,
} from "./fixtures.js";
export {
  createNixFixtures,
  findProgram,
  HOST_BUILD_OPTIONS,
  nixE2eSkipReason,
  TEST_GC_ROOTS_PARENT,
} from "./fixtures.js";
export type { LogEntry } from "./logger.js";
export { recordingLogger } from "./logger.js";
export type { ExportEntry, NarNode } from "./nar.js";
export { exportStream, narSerialise } from "./nar.js";
