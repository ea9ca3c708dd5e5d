export type { GoMetaStore, GoSnapshot } from "./go-metastore.js";
export { readGoMetaStore } from "./go-metastore.js";
export type { MigrateGoRootOptions, MigrationResult, MigrationStep } from "./migrate-go-root.js";
export { migrateGoRoot, migrationSteps } from "./migrate-go-root.js";
