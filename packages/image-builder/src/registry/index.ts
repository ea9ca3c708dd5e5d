export type { ArchiveImageSource } from "./archive-source.js";
export { createArchiveImageSource } from "./archive-source.js";
export type { AuthChallenge } from "./challenge.js";
export { parseChallenges } from "./challenge.js";
export type {
  BlobContent,
  BlobDescriptor,
  FetchedManifest,
  RegistryClientOptions,
  RequestListener,
  UploadBlobOptions,
} from "./client.js";
export {
  createRegistryClient,
  MANIFEST_ACCEPT,
  RegistryClient,
  registryApiHost,
} from "./client.js";
export type {
  CredentialHelperOptions,
  CredentialsProvider,
  DockerConfig,
  DockerCredentialsOptions,
  RegistryCredentials,
} from "./credentials.js";
export {
  createDockerCredentialsProvider,
  dockerConfigPath,
  readDockerConfig,
  resolveDockerCredentials,
  runCredentialHelper,
  staticCredentials,
} from "./credentials.js";
export type { RegistryErrorCode, RegistryErrorOptions } from "./errors.js";
export { RegistryError } from "./errors.js";
export type {
  HttpRequest,
  HttpResponse,
  HttpTransport,
  NodeTransportOptions,
  RequestBody,
} from "./http.js";
export { createNodeTransport } from "./http.js";
export type {
  ImageDescriptor,
  ImageSource,
  PushEvent,
  PushImageOptions,
  PushResult,
} from "./push.js";
export { createMemoryImageSource, pushImage } from "./push.js";
export type { RetryPolicy } from "./retry.js";
export { defaultRetryPolicy } from "./retry.js";
