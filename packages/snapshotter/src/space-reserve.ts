import { rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "@nix-snapshotter/nix-store";

/**
 * A file of this size under the root keeps space for Remove on a full disk: when its commit
 * fails for lack of space, the file is deleted and the commit tried again (Remove then frees the
 * snapshot's space); it is written again once there is room.
 */
const spaceReserveBytes = 256 * 1024;
export const spaceReserveName = "space-reserve";

/** The space reserve file of a snapshotter root. */
export class SpaceReserve {
  private state: "present" | "missing" | "busy" = "missing";

  private readonly root: string;
  private readonly logger: Logger;

  constructor(root: string, logger: Logger) {
    this.root = root;
    this.logger = logger;
  }

  /** Writes the space reserve if it is missing (no error: without room, it waits for later). */
  async ensure(): Promise<void> {
    if (this.state !== "missing") return;
    this.state = "busy";
    const path = join(this.root, spaceReserveName);
    const temporary = `${path}.new`;
    try {
      const existing = await stat(path).catch(() => undefined);
      if (existing?.size !== spaceReserveBytes) {
        // Zeros written for real (not a sparse file): the blocks are taken now.
        await writeFile(temporary, Buffer.alloc(spaceReserveBytes), { mode: 0o600 });
        await rename(temporary, path);
      }
      this.state = "present";
    } catch (error) {
      this.state = "missing";
      await rm(temporary, { force: true }).catch(() => undefined);
      this.logger.debug({ err: error }, "space reserve not written (no room yet)");
    }
  }

  /** Deletes the space reserve; false when there was none to free. */
  async release(): Promise<boolean> {
    if (this.state !== "present") return false;
    this.state = "busy";
    try {
      await rm(join(this.root, spaceReserveName));
      return true;
    } catch {
      return false;
    } finally {
      this.state = "missing";
    }
  }
}
