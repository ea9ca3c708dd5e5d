import { Command, CommanderError } from "commander";
import {
  ConfigError,
  defaultConfig,
  defaultConfigPath,
  envLayer,
  flagLayer,
  loadConfigFile,
  mergeConfig,
} from "./config.js";
import { createLogger, parseLogLevel } from "./logger.js";
import { startRegistry } from "./registry.js";

interface Flags {
  logLevel: string;
  config?: string;
  host?: string;
  port?: string;
  pkgsPath?: string;
  pkgsRepo?: string;
  storagePath?: string;
}

function fail(message: string): never {
  process.stderr.write(`nix-registry: ${message}\n`);
  process.exit(1);
}

async function main(argv: readonly string[]): Promise<void> {
  const program = new Command()
    .name("nix-registry")
    .description(
      "A read-only OCI registry that builds nix-snapshotter images from their names:\n" +
        "each path component of /v2/<name> is a package of the configured package set.",
    )
    .option("-l, --log-level <level>", "trace, debug, info, warn, error or fatal", "info")
    .option("-c, --config <path>", `configuration file (default ${defaultConfigPath} if it exists)`)
    .option("--host <address>", "address to listen on (HOST)")
    .option("-p, --port <port>", "port to listen on (PORT)")
    .option("--pkgs-path <path>", "the package set: a Nix file or directory (PKGS_PATH)")
    .option("--pkgs-repo <url>", "or a git repository; tags name its branches (PKGS_REPO)")
    .option("--storage-path <path>", "where manifests and blobs are stored (STORAGE_PATH)")
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) })
    .allowExcessArguments(false);
  try {
    program.parse(argv as string[], { from: "node" });
  } catch (error) {
    if (error instanceof CommanderError) process.exit(error.exitCode);
    throw error;
  }
  const flags = program.opts<Flags>();
  let config: ReturnType<typeof mergeConfig>;
  let level: ReturnType<typeof parseLogLevel>;
  try {
    level = parseLogLevel(flags.logLevel);
    config = mergeConfig(
      defaultConfig(),
      await loadConfigFile(flags.config ?? defaultConfigPath, flags.config !== undefined),
      envLayer(process.env),
      flagLayer({
        host: flags.host,
        port: flags.port,
        pkgs_path: flags.pkgsPath,
        pkgs_repo: flags.pkgsRepo,
        storage_path: flags.storagePath,
      }),
    );
  } catch (error) {
    fail(error instanceof ConfigError || error instanceof Error ? error.message : String(error));
  }
  const logger = createLogger(level);
  logger.debug({ config }, "configuration");
  // Signal handlers go in before the registry starts, as the daemon's do: a service manager (or
  // a test) may send SIGTERM while it is still opening its storage; Node's default action would
  // end the process there.
  let registry: Awaited<ReturnType<typeof startRegistry>> | undefined;
  let stopRequested = false;
  let signals = 0;
  const shutDown = (running: NonNullable<typeof registry>) => {
    running.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "error while shutting down");
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, "second signal; exiting without waiting for requests in flight");
      process.exit(130);
    }
    logger.info({ signal }, "got signal");
    if (registry) shutDown(registry);
    else stopRequested = true;
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  try {
    registry = await startRegistry({ config, logger });
  } catch (error) {
    logger.fatal({ err: error }, "cannot start");
    fail(error instanceof Error ? error.message : String(error));
  }
  if (stopRequested) shutDown(registry);
}

main(process.argv).catch((error: unknown) => {
  fail(error instanceof Error ? (error.stack ?? error.message) : String(error));
});
