import { inject } from "vitest";

/**
 * What scripts/stage-for-other-users.ts (the e2e project's global setup) copied for programs that
 * other users run: Nix build users, the rootless suite's user. They may not be able to enter the
 * checkout (a clone under root's home, a `mktemp -d`).
 */
export interface OtherUsersStage {
  /** The stage directory (mode 0755, under the temporary directory). */
  root: string;
  /** A copy of the Node binary that runs the tests. */
  node: string;
  /** A directory laid out like the checkout with the built apps and scripts/rootless. */
  repo: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    otherUsers: OtherUsersStage | undefined;
  }
}

/**
 * The staged Node and checkout layout for programs run as another user; without the global setup
 * (not root, or another config), the running Node and `repository` themselves.
 */
export function otherUsersStage(repository: string): Omit<OtherUsersStage, "root"> {
  const staged = inject("otherUsers");
  return staged ?? { node: process.execPath, repo: repository };
}
