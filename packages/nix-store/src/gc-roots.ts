import { randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, readlink, rename, rm, symlink, unlink } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { NixStoreError } from "./errors.js";
import type { StorePath } from "./store-path.js";

/** Nix's state directory when none is configured. */
export const DEFAULT_NIX_STATE_DIR = "/nix/var/nix";

/** Name of our directory under Nix's gcroots (root) or gcroots/per-user/<user> (rootless). */
export const GC_ROOTS_DIR_NAME = "nix-snapshotter";

const ownerPattern = /^[A-Za-z0-9_][A-Za-z0-9._:+=@-]{0,254}$/;

/** `.new-<owner>-<12 hex>` (being filled) and `.removing-<owner>-<12 hex>` (being deleted). */
const leftoverPattern = /^\.(new|removing)-(.+)-[0-9a-f]{12}$/;

/**
 * Environment variable naming a step at which the process kills itself with SIGKILL (tests of
 * crash safety start a child process with it). Read once; unset in normal operation.
 */
export const CRASH_POINT_ENV = "NIX_SNAPSHOTTER_TEST_CRASH_AT";
const crashPoint = process.env[CRASH_POINT_ENV];

/** Kills this process at `point` when {@link CRASH_POINT_ENV} names it (tests only). */
export function crashAt(point: string): void {
  if (crashPoint !== undefined && crashPoint === point) process.kill(process.pid, "SIGKILL");
}

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

/**
 * A hidden directory left by an interrupted {@link GcRoots.add} (`staged`: roots being filled in
 * before the rename into place) or {@link GcRoots.remove} (`removing`: renamed away, being
 * deleted). Nix's collector counts the links in it as roots until it is deleted.
 */
export interface GcRootLeftover {
  /** The entry's name under the roots directory, e.g. `.new-snapshot-7-0123456789ab`. */
  name: string;
  owner: string;
  state: "staged" | "removing";
}

/** A directory of direct GC roots: `<gcRootsDir>/<owner>/<hash>-<name>` -> store path. */
export interface GcRoots {
  readonly gcRootsDir: string;
  add(owner: string, storePaths: readonly StorePath[]): Promise<GcRootSet>;
  remove(owner: string): Promise<boolean>;
  /** Owners with a complete roots directory (not the hidden leftovers). */
  owners(): Promise<string[]>;
  list(owner: string): Promise<string[]>;
  /** Hidden directories of interrupted adds and removals, sorted by name. */
  leftovers(): Promise<GcRootLeftover[]>;
  /**
   * Deletes one leftover by name (as listed by {@link leftovers}); false when it is gone
   * already. The caller decides it is not in use: a `staged` one may belong to an add running
   * now.
   */
  removeLeftover(name: string): Promise<boolean>;
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
        crashAt("gc-roots:add:staged");
        try {
          await linkInto(staging, storePaths);
          crashAt("gc-roots:add:linked");
          await rename(staging, directory);
          crashAt("gc-roots:add:renamed");
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
        crashAt("gc-roots:add:merged");
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
      crashAt("gc-roots:remove:renamed");
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

    async leftovers() {
      try {
        const entries = await readdir(gcRootsDir, { withFileTypes: true });
        const found: GcRootLeftover[] = [];
        for (const entry of entries) {
          const match = leftoverPattern.exec(entry.name);
          if (match === null || !entry.isDirectory() || !ownerPattern.test(match[2]!)) continue;
          found.push({
            name: entry.name,
            owner: match[2]!,
            state: match[1] === "new" ? "staged" : "removing",
          });
        }
        return found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw wrap(error, `cannot list interrupted GC root directories in ${gcRootsDir}`);
      }
    },

    async removeLeftover(name) {
      const match = typeof name === "string" ? leftoverPattern.exec(name) : null;
      if (match === null || !ownerPattern.test(match[2]!)) {
        throw new NixStoreError(
          "InvalidArgument",
          `${JSON.stringify(String(name).slice(0, 300))} is not an interrupted GC root directory name`,
        );
      }
      const path = join(gcRootsDir, name);
      try {
        await lstat(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw wrap(error, `cannot remove interrupted GC root directory ${name}`);
      }
      try {
        await rm(path, { recursive: true, force: true });
      } catch (error) {
        throw wrap(error, `cannot remove interrupted GC root directory ${name}`);
      }
      return true;
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
