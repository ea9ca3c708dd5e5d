import { mkdir, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { CodedError } from "@nix-snapshotter/errdefs";
import type { NixStorePort } from "../nix-store-port.js";

export interface FakeNixStoreOptions {
  /** A directory of the test's own; store paths are created under it as real directories. */
  storeDir: string;
}

/** A coded error, as `@nix-snapshotter/nix-store` throws. */
export class FakeNixStoreError extends CodedError {
  override readonly name: string = "FakeNixStoreError";
}

/**
 * An in-memory stand-in for the Nix store for unit tests of code that uses `NixStorePort`:
 * paths "substitutable" become valid (a real directory with a `content` file) when realised,
 * roots are tracked per owner, and every call is recorded.
 */
export class FakeNixStore implements NixStorePort {
  readonly storeDir: string;
  readonly valid = new Set<string>();
  readonly substitutable = new Set<string>();
  readonly closureInfos = new Map<string, string[]>();
  readonly roots = new Map<string, Set<string>>();
  /** Hidden root directories of interrupted calls, by name (tests put them there). */
  readonly leftovers = new Map<string, { owner: string; state: "staged" | "removing" }>();
  readonly calls: Array<{ method: string; args: unknown[] }> = [];

  constructor(options: FakeNixStoreOptions) {
    this.storeDir = options.storeDir;
  }

  /** A store path name under this store: `<storeDir>/<32 chars from seed>-<name>`. */
  path(name: string, seed = name): string {
    const alphabet = "0123456789abcdfghijklmnpqrsvwxyz";
    let hash = "";
    let state = 7;
    for (let index = 0; index < 32; index++) {
      state = (state * 31 + seed.charCodeAt(index % seed.length)) % 1_000_003;
      hash += alphabet[state % 32];
    }
    return `${this.storeDir}/${hash}-${name}`;
  }

  /** Makes a path valid now, as a directory holding one file (or as given by `create`). */
  async add(path: string, create?: (path: string) => Promise<void>): Promise<string> {
    if (create === undefined) {
      await mkdir(join(path, "bin"), { recursive: true });
      await writeFile(join(path, "bin", basename(path)), `content of ${path}\n`, { mode: 0o555 });
    } else {
      await create(path);
    }
    this.valid.add(path);
    return path;
  }

  /**
   * Failures the next realise calls throw, one each, after creating the roots; `during` runs
   * first (e.g. a path vanishing or coming back while Nix works).
   */
  readonly realiseFailures: Array<{ error: Error; during?: () => void }> = [];

  /** When set, realise waits for this promise before finishing (to test cancellation). */
  realiseGate: Promise<void> | undefined;

  async realise(
    paths: readonly string[],
    options: { owner: string; signal?: AbortSignal },
  ): Promise<void> {
    this.calls.push({ method: "realise", args: [[...paths], { owner: options.owner }] });
    await this.addRoots(options.owner, paths);
    const failure = this.realiseFailures.shift();
    if (failure !== undefined) {
      failure.during?.();
      throw failure.error;
    }
    if (this.realiseGate !== undefined) {
      const signal = options.signal;
      await Promise.race([
        this.realiseGate,
        new Promise<never>((_, reject) => {
          signal?.throwIfAborted();
          signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
        }),
      ]);
    }
    const missing = paths.filter((path) => !this.valid.has(path) && !this.substitutable.has(path));
    if (missing.length > 0) {
      throw new FakeNixStoreError("NotFound", `cannot substitute ${missing.join(", ")}`);
    }
    for (const path of paths) {
      if (!this.valid.has(path)) {
        this.substitutable.delete(path);
        await this.add(path);
      }
    }
  }

  async addRoots(owner: string, paths: readonly string[]): Promise<void> {
    this.calls.push({ method: "addRoots", args: [owner, [...paths]] });
    const set = this.roots.get(owner) ?? new Set<string>();
    for (const path of paths) set.add(path);
    this.roots.set(owner, set);
  }

  async queryValidPaths(paths: readonly string[]): Promise<Set<string>> {
    this.calls.push({ method: "queryValidPaths", args: [[...paths]] });
    return new Set(paths.filter((path) => this.valid.has(path)));
  }

  async readClosureInfo(closureInfoPath: string): Promise<string[]> {
    this.calls.push({ method: "readClosureInfo", args: [closureInfoPath] });
    const lines = this.closureInfos.get(closureInfoPath);
    if (lines === undefined || !this.valid.has(closureInfoPath)) {
      throw new FakeNixStoreError("NotFound", `${closureInfoPath} has no store-paths file`);
    }
    return lines;
  }

  async removeRoots(owner: string): Promise<void> {
    this.calls.push({ method: "removeRoots", args: [owner] });
    this.roots.delete(owner);
  }

  async listRootOwners(): Promise<string[]> {
    this.calls.push({ method: "listRootOwners", args: [] });
    return [...this.roots.keys()];
  }

  async listRootLeftovers(): Promise<
    Array<{
      name: string;
      owner: string;
      state: "staged" | "removing";
    }>
  > {
    this.calls.push({ method: "listRootLeftovers", args: [] });
    return [...this.leftovers].map(([name, leftover]) => ({ name, ...leftover }));
  }

  async removeRootLeftover(name: string): Promise<void> {
    this.calls.push({ method: "removeRootLeftover", args: [name] });
    this.leftovers.delete(name);
  }
}
