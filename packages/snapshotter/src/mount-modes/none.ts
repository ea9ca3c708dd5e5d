import type { MountModeStrategy } from "./mount-mode.js";

/** `none`: nix labels are ignored; a plain overlay snapshotter (library only, not the daemon). */
export const noneMode = {
  name: "none" as const,
  description: "nix labels are ignored: a plain overlay snapshotter",
  nixLayers: false,
  minimumContainerd: undefined,
  async beforeCreate() {},
  async checkLayer() {},
  async commitLayer() {
    return false;
  },
  extraMounts() {
    return [];
  },
} satisfies MountModeStrategy;
