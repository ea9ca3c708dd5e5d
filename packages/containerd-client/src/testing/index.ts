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
  findContainerd,
  mountsUnder,
  processesMentioning,
  startContainerd,
} from "./containerd.js";
