import { sha256Digest } from "@nix-snapshotter/oci";
import type { BuiltImage } from "../build-image.js";

/**
 * The same image with its mountpoint layer's annotations replaced, manifest digest and blobs
 * updated to match: a hostile nix image for tests (a store-path label naming `/etc`, ...).
 */
export function withLayerAnnotations(
  image: BuiltImage,
  annotations: Record<string, string>,
): BuiltImage {
  const layers = image.manifest.layers.map((layer) =>
    layer.digest === image.layer.digest ? { ...layer, annotations } : layer,
  );
  const manifest = { ...image.manifest, layers };
  const bytes = new TextEncoder().encode(JSON.stringify(manifest));
  const digest = sha256Digest(bytes);
  const blobs = new Map(image.blobs);
  blobs.set(digest, bytes);
  return {
    ...image,
    manifest,
    manifestDescriptor: { ...image.manifestDescriptor, digest, size: bytes.length },
    layer: { ...image.layer, annotations },
    blobs,
  };
}
