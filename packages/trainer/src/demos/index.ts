/**
 * @fulgur/trainer/demos: ready-made TrainingModules for examples, benchmarks and tests (as
 * Lightning's `lightning.pytorch.demos`), kept out of the Trainer's own entry point.
 */
export { GPTLanguageModel, type GPTLanguageModelOptions } from "./gptLanguageModel";
