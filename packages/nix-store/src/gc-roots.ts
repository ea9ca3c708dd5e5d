import { randomBytes } from "node:crypto";
import { mkdir, readdir, readlink, rename, rm, symlink, unlink } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { NixStoreError } from "./errors.js";
import type { StorePath } from "./store-path.js";

/** Nix's state directory when none is configured. */
export const DEFAULT_NIX_STATE_DIR = "/nix/var/nix";

/** Name of our directory under Nix's gcroots (root) or gcroots/per-user/<user> (rootless). */
export const GC_ROOTS_DIR_NAME = "nix-snapshotter";

const ownerPattern = /^[A-Za-z0-9_][A-Za-z0-9._:+=@-]{0,254}$/;

/**
 * Where roots live by default: `/nix/var/nix/gcroots/nix-snapshotter` for root, and
 * `/nix/var/nix/gcroots/per-user/<user>/nix-snapshotter` for other users (the only part of
 * gcroots a multi-user Nix install lets a user write to).
 */
export function defaultGcRootsDir(
  stateDir: string = DEFAULT_NIX_STATE_DIR,
  uid: number = process.getuid?.() ?? 0,
): string {
  if (uid === 0) return join(stateDir, "gcroots", GC_ROOTS_DIR_NAME);
  return join(stateDir, "gcroots", "per-user", userInfo().username, GC_ROOTS_DIR_NAME);
}

/**
 * Checks a root owner name (a snapshot id, for example): 1 to 255 characters of letters,
 * digits and `._:+=@-`, not starting with a dot or dash. Returns it unchanged.
 */
export function validateRootOwner(owner: string): string {
  if (typeof owner !== "string" || !ownerPattern.test(owner)) {
    throw new NixStoreError(
      "InvalidArgument",
      `GC root owner ${JSON.stringify(owner)} must be 1-255 characters of [A-Za-z0-9._:+=@-] not starting with "." or "-"`,
    );
  }
  return owner;
}

/** The roots of one owner, as created by {@link GcRoots.add}. */
export interface GcRootSet {
  owner: string;
  /** The owner's directory, `<gcRootsDir>/<owner>`. */
  directory: string;
  /** One symlink per store path, `<directory>/<hash>-<name>`, in input order. */
  links: string[];
  /** True when this call created the owner's directory. */
  created: boolean;
}

/** A directory of direct GC roots: `<gcRootsDir>/<owner>/<hash>-<name>` -> store path. */
export interface GcRoots {
  readonly gcRootsDir: string;
  add(owner: string, storePaths: readonly StorePath[]): Promise<GcRootSet>;
  remove(owner: string): Promise<boolean>;
  owners(): Promise<string[]>;
  list(owner: string): Promise<string[]>;
}

const linkConcurrency = 64;

export function createGcRoots(gcRootsDir: string): GcRoots {
  const ownerDir = (owner: string) => join(gcRootsDir, validateRootOwner(owner));
  const temporaryName = (kind: string, owner: string) =>
    join(gcRootsDir, `.${kind}-${owner}-${randomBytes(6).toString("hex")}`);

  const wrap = (error: unknown, what: string): NixStoreError => {
    if (error instanceof NixStoreError) return error;
    const code = (error as NodeJS.ErrnoException).code;
    return new NixStoreError(
      code === "EACCES" || code === "EPERM" ? "PermissionDenied" : "Internal",
      `${what}: ${(error as Error).message}`,
      { cause: error },
    );
  };

  async function linkInto(directory: string, storePaths: readonly StorePath[]): Promise<string[]> {
    const links = storePaths.map((storePath) => join(directory, storePath.baseName));
    await forEachLimited(storePaths, linkConcurrency, async (storePath, index) => {
      const link = links[index]!;
      try {
        await symlink(storePath.path, link);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        if ((await readlink(link).catch(() => undefined)) === storePath.path) return;
        // Something else sits there: replace it atomically.
        const replacement = `${link}.${randomBytes(6).toString("hex")}.tmp`;
        await symlink(storePath.path, replacement);
        await rename(replacement, link);
      }
    });
    return links;
  }

  return {
    gcRootsDir,

    async add(owner, storePaths) {
      const directory = ownerDir(owner);
      try {
        await mkdir(gcRootsDir, { recursive: true });
        // Fast path for a new owner: fill a hidden directory (already under gcroots, so its
        // links are roots from the first one) and rename it into place in one step.
        const staging = temporaryName("new", owner);
        await mkdir(staging);
        try {
          await linkInto(staging, storePaths);
          await rename(staging, directory);
          return {
            owner,
            directory,
            links: storePaths.map((storePath) => join(directory, storePath.baseName)),
            created: true,
          };
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error;
        }
        // The owner exists already: add to it, then drop the staging copy.
        const links = await linkInto(directory, storePaths);
        await rm(staging, { recursive: true, force: true });
        return { owner, directory, links, created: false };
      } catch (error) {
        throw wrap(error, `cannot create GC roots for owner ${JSON.stringify(owner)}`);
      }
    },

    async remove(owner) {
      const directory = ownerDir(owner);
      const doomed = temporaryName("removing", owner);
      try {
        await rename(directory, doomed);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw wrap(error, `cannot remove GC roots of owner ${JSON.stringify(owner)}`);
      }
      try {
        await rm(doomed, { recursive: true, force: true });
      } catch (error) {
        throw wrap(error, `cannot remove GC roots of owner ${JSON.stringify(owner)}`);
      }
      return true;
    },

    async owners() {
      try {
        const entries = await readdir(gcRootsDir, { withFileTypes: true });
        return entries
          .filter((entry) => entry.isDirectory() && ownerPattern.test(entry.name))
          .map((entry) => entry.name)
          .sort();
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw wrap(error, `cannot list GC root owners in ${gcRootsDir}`);
      }
    },

    async list(owner) {
      const directory = ownerDir(owner);
      try {
        const names = await readdir(directory);
        const targets = await Promise.all(
          names
            .filter((name) => !name.endsWith(".tmp"))
            .map((name) =>
              // A link removed between readdir and readlink (a concurrent removeRoots) is gone,
              // not an error; anything else is.
              readlink(join(directory, name)).catch((error: NodeJS.ErrnoException) => {
                if (error.code === "ENOENT") return undefined;
                throw error;
              }),
            ),
        );
        return targets.filter((target): target is string => target !== undefined).sort();
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw wrap(error, `cannot list GC roots of owner ${JSON.stringify(owner)}`);
      }
    },
  };
}

/** Removes one link of an owner (used to roll back roots that were added by a failed call). */
export async function removeLink(link: string): Promise<void> {
  await unlink(link).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== "ENOENT") throw error;
  });
}

export async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  action: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      await action(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
