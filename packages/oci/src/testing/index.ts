export { hostPathEntries } from "./host-path-entries.js";
export type { TestImageArchive, TestImageArchiveOptions } from "./image-archive.js";
export { testImageArchive } from "./image-archive.js";
