// The daemon test harness, exported as `nix-snapshotter/testing` for the benchmarks (bench/).
export type { DaemonProcess, DaemonProcessOptions } from "./daemon-process.js";
export {
  daemonEntry,
  startDaemonProcess,
  testGcRootsParent,
  unixGrpcTransport,
} from "./daemon-process.js";
