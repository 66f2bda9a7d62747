#!/usr/bin/env node
// Compiles every kernels/*.cu with nvcc for each architecture Fulgur supports (sm_80, sm_90) and
// fails on any error or warning. CI has nvcc but no GPU, so this is where a broken kernel is caught
// before anyone runs it (DESIGN.md, decision 4). The flags mirror the NVRTC path in src/nvrtc.ts:
// C++17, no fast math, the kernels directory as the only include path.
//
// Usage: node scripts/compile-kernels.mjs [--arch sm_80,sm_90] [--nvcc /path/to/nvcc] [--keep DIR] [--kernels DIR]
import { spawn, spawnSync } from "node:child_process";
import { availableParallelism } from "node:os";
import { mkdtempSync, readdirSync, rmSync, statSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const opts = { archs: ["sm_80", "sm_90"], nvcc: process.env.NVCC ?? "nvcc", keep: null, kernels: resolve(here, "..", "kernels") };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--arch") opts.archs = value().split(",").map((s) => s.trim()).filter(Boolean);
    else if (a === "--nvcc") opts.nvcc = value();
    else if (a === "--keep") opts.keep = resolve(value());
    else if (a === "--kernels") opts.kernels = resolve(value());
    else throw new Error(`unknown option ${a}; expected --arch, --nvcc, --keep or --kernels`);
  }
  for (const arch of opts.archs) {
    if (!/^sm_\d+a?$/.test(arch)) throw new Error(`--arch: got "${arch}"; expected names like sm_80,sm_90`);
  }
  return opts;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`compile-kernels: ${err.message}`);
    return 2;
  }
  const probe = spawnSync(opts.nvcc, ["--version"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    console.error(
      `compile-kernels: cannot run nvcc ("${opts.nvcc}"): ${probe.error?.message ?? probe.stderr}. ` +
        "Install the CUDA toolkit or pass --nvcc /path/to/nvcc (or set NVCC).",
    );
    return 2;
  }
  const kernelsDir = opts.kernels;
  const files = readdirSync(kernelsDir).filter((f) => f.endsWith(".cu")).sort();
  if (files.length === 0) {
    console.error(`compile-kernels: no .cu files in ${kernelsDir}`);
    return 1;
  }
  const out = opts.keep ?? mkdtempSync(join(tmpdir(), "fulgur-kernels-"));
  const jobs = files.flatMap((file) => opts.archs.map((arch) => ({ file, arch })));
  const results = new Array(jobs.length);
  let next = 0;
  // nvcc is single-threaded; one job per core keeps CI's wall time down.
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      const { file, arch } = jobs[i];
      const cubin = join(out, `${file.replace(/\.cu$/, "")}.${arch}.cubin`);
      const args = [
        "-cubin",
        `-arch=${arch}`,
        "-std=c++17",
        "-I",
        kernelsDir,
        "--Werror",
        "all-warnings",
        "-Xptxas",
        "-warn-spills,-warn-lmem-usage",
        "-o",
        cubin,
        join(kernelsDir, file),
      ];
      const t0 = Date.now();
      results[i] = await new Promise((resolveJob) => {
        let text = "";
        const child = spawn(opts.nvcc, args);
        child.stdout.on("data", (d) => (text += d));
        child.stderr.on("data", (d) => (text += d));
        child.on("error", (err) => resolveJob({ file, arch, ok: false, text: String(err), status: null, ms: Date.now() - t0 }));
        child.on("close", (status) => {
          text = text.trim();
          const ok = status === 0 && text.length === 0 && existsSync(cubin) && statSync(cubin).size > 0;
          resolveJob({ file, arch, ok, text, status, ms: Date.now() - t0 });
        });
      });
    }
  };
  try {
    const parallel = Math.max(1, Math.min(availableParallelism(), 8, jobs.length));
    await Promise.all(Array.from({ length: parallel }, worker));
  } finally {
    if (!opts.keep) rmSync(out, { recursive: true, force: true });
  }
  let failed = 0;
  for (const r of results) {
    if (r.ok) console.log(`ok   ${r.file} ${r.arch} (${r.ms} ms)`);
    else {
      failed++;
      console.log(`FAIL ${r.file} ${r.arch} (exit ${r.status})\n${r.text}`);
    }
  }
  console.log(`${results.length - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

process.exit(await main());
