import { createHash } from "node:crypto";

/**
 * The chain ids of a layer stack, as containerd names committed snapshots:
 * ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)).
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const result: string[] = [];
  let previous: string | undefined;
  for (const diffId of diffIds) {
    const next =
      previous === undefined
        ? diffId
        : `sha256:${createHash("sha256").update(`${previous} ${diffId}`).digest("hex")}`;
    result.push(next);
    previous = next;
  }
  return result;
}
