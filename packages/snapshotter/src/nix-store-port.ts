/**
 * The narrow view of Nix the snapshotter needs. `@nix-snapshotter/nix-store` provides the real
 * one (see `nixStorePortFrom`); unit tests inject a fake.
 *
 * GC roots are grouped by owner: the snapshotter uses one owner per snapshot
 * (`<prefix><id>`), created before realisation and removed in one call.
 */
export interface NixStorePort {
  /** Store directory, e.g. `/nix/store`. */
  readonly storeDir: string;
  /**
   * Makes every path a GC root of `owner`, then realises all of them in one batch
   * (substituting or building what is missing). Rejects if any path cannot be realised;
   * the roots may then exist and the caller removes them with `removeRoots(owner)`.
   */
  realise(
    paths: readonly string[],
    options: { owner: string; signal?: AbortSignal },
  ): Promise<void>;
  /** Adds GC roots for `paths` to `owner` without realising. */
  addRoots(owner: string, paths: readonly string[]): Promise<void>;
  /** The subset of `paths` that are valid in the store. */
  queryValidPaths(paths: readonly string[]): Promise<Set<string>>;
  /** Lines of `<closureInfo>/store-paths` (not validated by the port). */
  readClosureInfo(closureInfoPath: string): Promise<string[]>;
  /** Removes every root of `owner`; no error when there is none. */
  removeRoots(owner: string): Promise<void>;
  /** Owners that currently have roots. */
  listRootOwners(): Promise<string[]>;
  /**
   * Hidden root directories left by a root creation or removal that was interrupted (a kill):
   * `staged` ones were being filled for `owner`, `removing` ones were being deleted. Nix counts
   * their links as roots until they are deleted. Optional: a port without it has none.
   */
  listRootLeftovers?(): Promise<RootLeftover[]>;
  /** Deletes one leftover by its `name`; no error when it is gone. */
  removeRootLeftover?(name: string): Promise<void>;
}

export interface RootLeftover {
  name: string;
  owner: string;
  state: "staged" | "removing";
}
