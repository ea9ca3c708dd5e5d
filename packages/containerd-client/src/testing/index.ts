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
  findContainerd,
  mountsUnder,
  processesMentioning,
  runContainer,
  startContainerd,
} from "./containerd.js";
