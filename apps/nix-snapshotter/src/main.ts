import { Command, CommanderError } from "commander";
import {
  ConfigError,
  defaultConfig,
  defaultConfigPath,
  flagLayer,
  loadConfigFile,
  mergeConfig,
} from "./config.js";
import { startDaemon } from "./daemon.js";
import { createLogger, parseLogLevel } from "./logger.js";
import { daemonVersion } from "./version.js";

interface Flags {
  logLevel: string;
  config: string;
  address?: string;
  root?: string;
}

function fail(message: string): never {
  process.stderr.write(`nix-snapshotter: ${message}\n`);
  process.exit(1);
}

async function main(argv: readonly string[]): Promise<void> {
  const program = new Command()
    .name("nix-snapshotter")
    .description(
      "A containerd proxy snapshotter that takes container packages from the Nix store.\n" +
        "Serves containerd's Snapshots API (and the CRI ImageService) on a unix socket.",
    )
    // `-v` as the Go daemon spells it.
    .version(daemonVersion(), "-v, --version", "print the version and exit")
    .option("-l, --log-level <level>", "trace, debug, info, warn, error, fatal or panic", "info")
    .option("-c, --config <path>", "path to the configuration file", defaultConfigPath)
    .option("-a, --address <path>", "unix socket of the gRPC server (overrides the config)")
    .option("--root <path>", "directory for persistent data (overrides the config)")
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

  let level: ReturnType<typeof parseLogLevel>;
  let config: ReturnType<typeof mergeConfig>;
  try {
    level = parseLogLevel(flags.logLevel);
    config = mergeConfig(
      defaultConfig(),
      await loadConfigFile(flags.config),
      flagLayer({
        ...(flags.address !== undefined ? { address: flags.address } : {}),
        ...(flags.root !== undefined ? { root: flags.root } : {}),
      }),
    );
  } catch (error) {
    fail(error instanceof ConfigError || error instanceof Error ? error.message : String(error));
  }

  const logger = createLogger(level);
  logger.debug({ config, configPath: flags.config }, "configuration");

  // Signal handlers go in before the daemon starts: systemd (or a test) may send SIGTERM as
  // soon as READY=1 arrives, which is before startDaemon() has returned. Node's default action
  // would kill the process there without removing the socket or closing the database.
  let daemon: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let stopRequested = false;
  let signals = 0;
  const shutDown = (current: NonNullable<typeof daemon>) => {
    current.close().then(
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
      logger.warn({ signal }, "second signal; exiting without waiting for in-flight calls");
      process.exit(130);
    }
    logger.info({ signal }, "got signal");
    if (daemon) shutDown(daemon);
    else stopRequested = true;
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  try {
    daemon = await startDaemon({ config, logger });
  } catch (error) {
    logger.fatal({ err: error }, "cannot start");
    logger.flush?.();
    fail(error instanceof Error ? error.message : String(error));
  }
  if (stopRequested) shutDown(daemon);
}

main(process.argv).catch((error: unknown) => {
  fail(error instanceof Error ? (error.stack ?? error.message) : String(error));
});
