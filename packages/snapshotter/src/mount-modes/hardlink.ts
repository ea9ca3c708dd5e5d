import type { MountModeContext, MountModeStrategy } from "./mount-mode.js";

/**
 * `hardlink`: at commit of a nix layer, its store paths' files are hard-linked (copied where a
 * link is impossible) into the layer's own directory; containers get one plain overlay. Works on
 * containerd 1.6 and keeps the host's mount table small.
 */
export const hardlinkMode = {
  name: "hardlink" as const,
  description:
    "store files hard-linked into the nix layer at commit, one overlay mount per container (works with containerd 1.6, small mount table)",
  nixLayers: true,
  minimumContainerd: "1.6",

  /**
   * Links the store paths of ancestors committed without links (while the snapshotter ran in
   * another mount mode), so a container on top sees them.
   */
  async beforeCreate(parent, context: MountModeContext) {
    for (const id of [parent.id, ...context.store.parentIds(parent)]) {
      // The parent's header is the caller's (read in the same tick); the others are read here.
      const ancestor = id === parent.id ? parent : context.store.getById(id);
      if (ancestor === undefined || ancestor.linked || !ancestor.hasNixPaths) continue;
      await context.holding(id, async () => {
        await context.linkLayer(ancestor, ancestor.key);
        context.store.transaction(() => context.store.markLinked(id));
      });
      context.logger.info(
        { key: ancestor.key, id },
        "linked store paths of a layer committed in another mount mode",
      );
    }
  },

  async checkLayer() {},

  async commitLayer(record, key, context) {
    await context.linkLayer(record, key);
    return true;
  },

  extraMounts() {
    return [];
  },
} satisfies MountModeStrategy;
