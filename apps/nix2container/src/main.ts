import { CommanderError } from "commander";
import { CliError } from "./cli-error.js";
import { createProgram } from "./program.js";

try {
  await createProgram().exitOverride().parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode;
  } else {
    const message =
      error instanceof CliError ? error.message : ((error as Error).stack ?? String(error));
    process.stderr.write(`nix2container: ${message}\n`);
    process.exitCode = 1;
  }
}
