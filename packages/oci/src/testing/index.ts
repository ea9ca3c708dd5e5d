export type { GzipBombOptions } from "./archive-bombs.js";
export { tarFileHeader, writeGzipBomb } from "./archive-bombs.js";
export { hostPathEntries } from "./host-path-entries.js";
export type { TestImageArchive, TestImageArchiveOptions } from "./image-archive.js";
export { testImageArchive } from "./image-archive.js";
