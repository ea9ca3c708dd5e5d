export type { NixLayerAnnotations } from "./annotations.js";
export {
  Annotation,
  nixLayerAnnotations,
  nixStorePathAnnotation,
  readNixLayerAnnotations,
} from "./annotations.js";
export type {
  ArchiveContents,
  ArchiveImage,
  ArchiveLayer,
  ArchiveManifest,
  LoadImageOptions,
  WriteOciArchiveOptions,
} from "./archive.js";
export { loadArchiveImage, readArchive, writeOciArchive } from "./archive.js";
export type { LoadArchiveFileOptions, ReadArchiveFileOptions } from "./archive-file.js";
export {
  loadArchiveFile,
  openRegularFile,
  readArchiveFile,
  readArchiveStream,
} from "./archive-file.js";
export type { ArchiveLimits } from "./archive-limits.js";
export {
  defaultArchiveLimits,
  formatBytes,
  quoteTruncated,
  resolveArchiveLimits,
} from "./archive-limits.js";
export type { CompressOptions, DecompressOptions } from "./compression.js";
export { compress, compressAsync, decompress, detectCompression } from "./compression.js";
export type { Digest, Digester, VerifyTarget } from "./digest.js";
export {
  createDigester,
  createVerifyStream,
  digestHex,
  isDigest,
  parseDigest,
  sha256Digest,
  verifyBlob,
} from "./digest.js";
export type { OciErrorCode, OciErrorOptions } from "./errors.js";
export { OciError } from "./errors.js";
export type { LayerCompression } from "./media-types.js";
export {
  DockerMediaType,
  isIndexMediaType,
  isLayerMediaType,
  isManifestMediaType,
  layerCompression,
  layerMediaType,
  MediaType,
} from "./media-types.js";
export type {
  ImageReference,
  NixReference,
  ParseReferenceOptions,
  RegistryReference,
} from "./reference.js";
export {
  defaultDomain,
  defaultTag,
  familiarReference,
  formatReference,
  nixReferencePrefix,
  normalizeReference,
  parseReference,
  referenceName,
  withDefaultTag,
} from "./reference.js";
export type { ReadTarOptions, TarEntryType, TarReadEntry, TarWriteEntry } from "./tar.js";
export {
  encodeTarEntry,
  normalizeEntryName,
  readTar,
  resolveLinkTarget,
  tarTrailer,
  writeTar,
} from "./tar.js";
export type {
  ContainerConfig,
  Descriptor,
  DockerManifestEntry,
  History,
  ImageConfig,
  ImageLayout,
  Index,
  Manifest,
  Platform,
  RootFs,
} from "./types.js";
export type { ContainerConfigResult } from "./validate.js";
export {
  containerConfigKeys,
  parseJson,
  validateContainerConfig,
  validateDescriptor,
  validateDockerManifest,
  validateImageConfig,
  validateImageLayout,
  validateIndex,
  validateManifest,
  validatePlatform,
} from "./validate.js";
