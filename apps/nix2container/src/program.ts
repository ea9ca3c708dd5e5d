import { Command, Option } from "commander";
import { registerBuildCommand } from "./commands/build.js";
import { registerInspectCommand } from "./commands/inspect.js";
import { registerLoadCommand } from "./commands/load.js";
import { registerPushCommand } from "./commands/push.js";
import { defaultAddress, defaultNamespace, logLevels } from "./global-options.js";

/** The nix2container program: global flags as the Go tool has them, one module per command. */
export function createProgram(): Command {
  const program = new Command("nix2container")
    .description("convert nix store paths into a container image")
    .addOption(
      new Option("-l, --log-level <level>", "set the logging level")
        .choices(logLevels)
        .default("info"),
    )
    .addOption(
      new Option("-a, --address <address>", "containerd address")
        .env("CONTAINERD_ADDRESS")
        .default(defaultAddress),
    )
    .addOption(
      new Option("-n, --namespace <namespace>", "containerd namespace")
        .env("CONTAINERD_NAMESPACE")
        .default(defaultNamespace),
    )
    .showHelpAfterError()
    .allowExcessArguments(false);
  registerBuildCommand(program);
  registerPushCommand(program);
  registerInspectCommand(program);
  registerLoadCommand(program);
  return program;
}
