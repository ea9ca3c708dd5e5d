/** Labels containerd's garbage collector and unpacker read. */
export const Label = {
  /** On a lease: RFC 3339 time after which the lease is collected. */
  GcExpire: "containerd.io/gc.expire",
  /** On content: the diff id of a compressed layer. */
  Uncompressed: "containerd.io/uncompressed",
  /** On a snapshot: the chain id it was unpacked for. */
  SnapshotRef: "containerd.io/snapshot.ref",
  /** Prefix of layer annotations passed to snapshotters as labels. */
  SnapshotLabelPrefix: "containerd.io/snapshot/",
  /** On an image: containerd's CRI manages it (no extra `sha256:` name is added). */
  CriImage: "io.cri-containerd.image",
} as const;

/** `containerd.io/gc.ref.content.<name>`: content kept alive by the labelled object. */
export function gcContentLabel(name: string): string {
  return `containerd.io/gc.ref.content.${name}`;
}

/** `containerd.io/gc.ref.snapshot.<snapshotter>`: a snapshot kept alive by the labelled content. */
export function gcSnapshotLabel(snapshotter: string): string {
  return `containerd.io/gc.ref.snapshot.${snapshotter}`;
}

/** The layer annotations containerd passes to snapshotters (`containerd.io/snapshot/...`). */
export function snapshotLabelsOf(
  annotations: Readonly<Record<string, string>> | undefined,
): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(annotations ?? {})) {
    if (key.startsWith(Label.SnapshotLabelPrefix)) labels[key] = value;
  }
  return labels;
}
