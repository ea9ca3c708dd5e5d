export type { ImageBuildErrorCode, ImageBuildErrorOptions } from "./build-error.js";
export { ImageBuildError } from "./build-error.js";
export type { AnnotationForm, BuildImageOptions, BuiltImage } from "./build-image.js";
export { buildImage } from "./build-image.js";
export type { Closure, ClosureInfo, ReadClosureOptions } from "./closure.js";
export { closureStorePaths, parseStorePathList, readClosure } from "./closure.js";
export type { WriteImageArchiveOptions } from "./export-archive.js";
export { writeImageArchive } from "./export-archive.js";
export type { FileType, MemoryNode, StoreFileSystem } from "./file-system.js";
export { createMemoryFileSystem, createNodeFileSystem } from "./file-system.js";
export { hostPlatform, mergeContainerConfig } from "./image-config.js";
export type { MountpointLayerOptions } from "./mountpoint-layer.js";
export { compareEntryNames, planMountpointLayer } from "./mountpoint-layer.js";
export type {
  ArchiveImageSource,
  AuthChallenge,
  BlobContent,
  BlobDescriptor,
  CredentialHelperOptions,
  CredentialsProvider,
  DockerConfig,
  DockerCredentialsOptions,
  FetchedManifest,
  HttpRequest,
  HttpResponse,
  HttpTransport,
  ImageDescriptor,
  ImageSource,
  NodeTransportOptions,
  PushEvent,
  PushImageOptions,
  PushResult,
  RegistryClientOptions,
  RegistryCredentials,
  RegistryErrorCode,
  RegistryErrorOptions,
  RequestBody,
  RequestListener,
  RetryPolicy,
  UploadBlobOptions,
} from "./registry/index.js";
export {
  createArchiveImageSource,
  createDockerCredentialsProvider,
  createMemoryImageSource,
  createNodeTransport,
  createRegistryClient,
  defaultRetryPolicy,
  dockerConfigPath,
  MANIFEST_ACCEPT,
  parseChallenges,
  pushImage,
  RegistryClient,
  RegistryError,
  readDockerConfig,
  registryApiHost,
  resolveDockerCredentials,
  runCredentialHelper,
  staticCredentials,
} from "./registry/index.js";
