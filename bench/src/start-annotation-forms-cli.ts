/** `node bench/dist/start-annotation-forms.js`: see src/start-annotation-forms.ts. */
import { benchStartAnnotationForms } from "./start-annotation-forms.js";

const sizes = (process.env.BENCH_FORMS_SIZES ?? "1000,5000")
  .split(",")
  .map(Number)
  .filter((value) => Number.isSafeInteger(value) && value > 0);
const runs = Number(process.env.BENCH_FORMS_RUNS ?? 7);
benchStartAnnotationForms(sizes, runs, (line) => process.stderr.write(`bench: ${line}\n`))
  .then((points) => {
    process.stdout.write(
      "| paths | form | start ms | layered ms | layered / form | snapshot ms (layered) | manifest bytes |\n",
    );
    process.stdout.write("| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for (const point of points) {
      for (const form of ["per-path", "closure", "both"] as const) {
        process.stdout.write(
          `| ${point.paths} | ${form} | ${point.ms[form].toFixed(0)} | ${point.ms.layered.toFixed(0)} | ${(point.ms.layered / point.ms[form]).toFixed(2)}x | ${point.snapshotMs[form].toFixed(0)} (${point.snapshotMs.layered.toFixed(0)}) | ${point.manifestBytes[form]} |\n`,
        );
      }
    }
  })
  .catch((error: unknown) => {
    process.stderr.write(
      `bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exitCode = 1;
  });
