/**
 * Annotation names. The nix annotations sit on the mountpoint layer's descriptor; containerd passes
 * every layer annotation prefixed `containerd.io/snapshot/` to the snapshotter as a label.
 */
export const Annotation = {
  /** Per-path form: `"true"` marks a nix layer (pdtpartners/nix-snapshotter `NixLayerAnnotation`). */
  NixLayer: "containerd.io/snapshot/nix-layer",
  /** Per-path form: prefix of `<prefix><i>` = store path i (`NixStorePrefixAnnotation`). */
  NixStorePathPrefix: "containerd.io/snapshot/nix-store-path.",
  /** Closure form: a closure-info store path whose `store-paths` file lists the closure. */
  NixClosure: "containerd.io/snapshot/nix-closure",
  /** OCI: the reference name (a tag) of a manifest in an index. */
  RefName: "org.opencontainers.image.ref.name",
  /** containerd: the full image name of a manifest in an index. */
  ContainerdImageName: "io.containerd.image.name",
} as const;

/** The per-path annotation key of the i-th store path. */
export function nixStorePathAnnotation(index: number): string {
  return `${Annotation.NixStorePathPrefix}${index}`;
}

export interface NixLayerAnnotations {
  /** Store paths of the per-path form, in index order. */
  storePaths: string[];
  /** The closure-info store path of the closure form, when present. */
  closure?: string;
}

/**
 * Reads the nix annotations of a layer, in either form. Returns undefined when the layer is not a
 * nix layer. Per-path indices must be contiguous from 0.
 */
export function readNixLayerAnnotations(
  annotations: Readonly<Record<string, string>> | undefined,
): NixLayerAnnotations | undefined {
  if (annotations === undefined) return undefined;
  const closure = annotations[Annotation.NixClosure];
  const isNixLayer = annotations[Annotation.NixLayer] === "true";
  if (!isNixLayer && closure === undefined) return undefined;
  const storePaths: string[] = [];
  for (let index = 0; ; index++) {
    const value = annotations[nixStorePathAnnotation(index)];
    if (value === undefined) break;
    storePaths.push(value);
  }
  return closure === undefined ? { storePaths } : { storePaths, closure };
}

/** Builds the annotations of a nix layer: the per-path form always, the closure form when given. */
export function nixLayerAnnotations(
  storePaths: readonly string[],
  closure?: string,
): Record<string, string> {
  const result: Record<string, string> = { [Annotation.NixLayer]: "true" };
  storePaths.forEach((storePath, index) => {
    result[nixStorePathAnnotation(index)] = storePath;
  });
  if (closure !== undefined) result[Annotation.NixClosure] = closure;
  return result;
}
