import { ErrorCode, SnapshotterError } from "../errors.js";
import { bindMode } from "./bind.js";
import { hardlinkMode } from "./hardlink.js";
import type { MountModeStrategy } from "./mount-mode.js";
import { noneMode } from "./none.js";

export type { MountModeContext, MountModeStrategy } from "./mount-mode.js";

/**
 * The mount modes that serve nix layers, the first being the default: the daemon's
 * `mount_mode` accepts exactly these, and its docs, the NixOS module's enum and the test
 * harnesses follow this list (a unit test compares them). A new mode is a module here.
 */
export const nixMountModes = [bindMode, hardlinkMode] as const;

/** Every mount mode of the library: the nix ones, then `none` (a plain overlay). */
export const mountModes = [...nixMountModes, noneMode] as const;

export type MountMode = (typeof mountModes)[number]["name"];
export type NixMountMode = (typeof nixMountModes)[number]["name"];

export const defaultMountMode: NixMountMode = nixMountModes[0].name;

/** The strategy of mount mode `name`; InvalidArgument for an unknown one. */
export function mountModeNamed(name: string): MountModeStrategy {
  const mode = mountModes.find((candidate) => candidate.name === name);
  if (mode === undefined) {
    throw new SnapshotterError(ErrorCode.InvalidArgument, `unknown mount mode "${name}"`);
  }
  return mode;
}
