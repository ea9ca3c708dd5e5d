export type {
  Containerd,
  ContainerdBins,
  ContainerdVersion,
  CriOptions,
  CtrOptions,
  CtrResult,
  StartContainerdOptions,
  UnpackConfig,
} from "./containerd.js";
export {
  canRunContainerd,
  containerdSkipReason,
  containerdVersionOf,
  findContainerd,
  mountsUnder,
  processesMentioning,
  runContainer,
  startContainerd,
  systemContainerdVersion,
} from "./containerd.js";
