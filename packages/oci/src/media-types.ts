/** OCI image-spec media types. */
export const MediaType = {
  ImageIndex: "application/vnd.oci.image.index.v1+json",
  ImageManifest: "application/vnd.oci.image.manifest.v1+json",
  ImageConfig: "application/vnd.oci.image.config.v1+json",
  ImageLayer: "application/vnd.oci.image.layer.v1.tar",
  ImageLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ImageLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  ImageLayerNonDistributable: "application/vnd.oci.image.layer.nondistributable.v1.tar",
  ImageLayerNonDistributableGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  ImageLayerNonDistributableZstd: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  EmptyJson: "application/vnd.oci.empty.v1+json",
  ImageLayout: "application/vnd.oci.layout.header.v1+json",
} as const;

/** Docker image manifest schema 2 media types. */
export const DockerMediaType = {
  ManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  Manifest: "application/vnd.docker.distribution.manifest.v2+json",
  Config: "application/vnd.docker.container.image.v1+json",
  Layer: "application/vnd.docker.image.rootfs.diff.tar",
  LayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  ForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

export type LayerCompression = "none" | "gzip" | "zstd";

const layerMediaTypes: Record<string, LayerCompression> = {
  [MediaType.ImageLayer]: "none",
  [MediaType.ImageLayerGzip]: "gzip",
  [MediaType.ImageLayerZstd]: "zstd",
  [MediaType.ImageLayerNonDistributable]: "none",
  [MediaType.ImageLayerNonDistributableGzip]: "gzip",
  [MediaType.ImageLayerNonDistributableZstd]: "zstd",
  [DockerMediaType.Layer]: "none",
  [DockerMediaType.LayerGzip]: "gzip",
  [DockerMediaType.ForeignLayerGzip]: "gzip",
};

export function isManifestMediaType(mediaType: string): boolean {
  return mediaType === MediaType.ImageManifest || mediaType === DockerMediaType.Manifest;
}

export function isIndexMediaType(mediaType: string): boolean {
  return mediaType === MediaType.ImageIndex || mediaType === DockerMediaType.ManifestList;
}

export function isLayerMediaType(mediaType: string): boolean {
  return mediaType in layerMediaTypes;
}

/** The compression a layer media type names, or undefined when it is not a layer type. */
export function layerCompression(mediaType: string): LayerCompression | undefined {
  return layerMediaTypes[mediaType];
}

/** The OCI layer media type for a compression. */
export function layerMediaType(compression: LayerCompression): string {
  switch (compression) {
    case "gzip":
      return MediaType.ImageLayerGzip;
    case "zstd":
      return MediaType.ImageLayerZstd;
    default:
      return MediaType.ImageLayer;
  }
}
